"""The tables and messages the commands print (Rich), apart from the commands themselves."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from duolabel.cli.common import err, out
from duolabel.formatting import duration, money


def _status_table(status) -> Table:
    table = Table(title="Project status", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("items", status.items),
        ("  golden (expert labels)", status.golden),
        ("predicted by the model", status.predicted),
        ("calibrated", status.calibrated),
        ("accepted from the model", status.accepted),
        ("routed to people", status.routed_to_people),
        ("  waiting for people", status.waiting_for_people),
        ("human answers", status.answers),
        *((f"open expert tasks: {reason}", n) for reason, n in status.expert_tasks.items() if n),
    ]
    rows += [(f"final labels: {src}", n) for src, n in sorted(status.final_by_source.items())]
    for what, n in rows:
        table.add_row(what, f"{n:,}")
    cost = status.cost
    table.add_row("cost: model", money(cost.model, cost.currency))
    table.add_row(f"cost: people ({cost.human_answers:,} answers)", money(cost.humans, cost.currency))
    if cost.expert_answers:
        table.add_row(f"cost: experts ({cost.expert_answers:,} answers)", money(cost.experts, cost.currency))
    if cost.setup:
        table.add_row("cost: set-up", money(cost.setup, cost.currency))
    table.add_row("cost so far", money(cost.total, cost.currency))
    cmp = status.comparison
    table.add_section()
    table.add_row(f"people alone, {cmp.items:,} items (estimate)", money(cmp.humans_only, cmp.currency))
    table.add_row("model alone (ledger)", money(cmp.model_only, cmp.currency))
    table.add_row("hybrid, when people finish", money(cmp.hybrid, cmp.currency))
    table.add_row("golden set (experts + set-up)", money(cmp.golden_set, cmp.currency))
    table.add_row("saving vs people alone", money(cmp.saving, cmp.currency))
    if cmp.roi is not None:
        table.add_row("return on the model + golden set", f"{cmp.roi:,.1f}x")
    return table


def _batch_table(reports) -> Table:
    table = Table(title="Batches")
    for column in (
        "batch",
        "items",
        "accepted",
        "to people",
        "human share",
        "waiting",
        "model (golden acc.)",
    ):
        table.add_column(column, justify="left" if column == "batch" else "right")
    for r in reports:
        accuracy = "–" if r.golden_accuracy is None else f"{r.golden_accuracy:.3f}"
        table.add_row(
            r.batch,
            f"{r.items:,}",
            f"{r.accepted:,}",
            f"{r.to_people:,}",
            f"{r.human_share:.0%}",
            f"{r.waiting:,}",
            f"{(r.model_version or '–')[:8]} ({accuracy})",
        )
    return table


#: The labeler ``duolabel init`` writes (``init_project`` without ``labeler`` keeps the
#: embedded default, the frozen ``embedding`` labeler, which the bundled example uses).


def _calibration_table(result) -> Table:
    bins = int(result.before["ece_bins"])
    table = Table(title=f"Calibration of {result.labeler} on the golden items: {result.method}")
    for col in ("metric", "before", "after (cross-validated)"):
        table.add_column(col)
    names = {"ece": f"ECE ({bins} equal-mass bins)", "auroc": "error-detection AUROC"}
    for key in ("accuracy", "ece", "brier", "nll", "auroc"):
        table.add_row(names.get(key, key), f"{result.before[key]:.4f}", f"{result.after[key]:.4f}")
    return table


def _ranking_table(ranking: dict[str, float]) -> Table:
    from duolabel.core.evidence import ERROR_SIGNALS

    table = Table(title="How well each signal ranks the model's errors on the golden items")
    for col in ("signal", "what it is", "AUROC"):
        table.add_column(col)
    for name, value in ranking.items():
        table.add_row(name, ERROR_SIGNALS[name][0], "n/a" if value != value else f"{value:.3f}")
    return table


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _plan_output(plan) -> None:

    for lab in plan.labelers:
        if lab.prompt is not None:
            # Verbatim between two rules: a panel would re-wrap the lines the model reads.
            rule = "-" * 40
            out.print(f"Prompt of {lab.name} for one item, as it will be sent:\n{rule}", highlight=False)
            out.print(lab.prompt, markup=False, highlight=False, soft_wrap=True)
            out.print(rule, highlight=False)
    table = Table(title="Labelers: the items each has not labelled yet, and the whole project")
    columns = ("items left", "tokens per item", "time per item", "cost per item", "time", "cost")
    for column in ("labeler", *columns, "whole project"):
        table.add_column(column, justify="left" if column == "labeler" else "right")
    for lab in plan.labelers:
        tokens = "–" if lab.tokens_per_item is None else f"{lab.tokens_per_item:,.0f}"
        table.add_row(
            f"{lab.name} ({lab.backend})",
            f"{lab.items:,} of {lab.project_items:,}",
            tokens + (" (estimated)" if lab.tokens_estimated else ""),
            f"{lab.seconds_per_item:.3g} s",
            money(lab.cost_per_item, plan.currency),
            duration(lab.seconds),
            money(lab.cost, plan.currency),
            money(lab.project_cost, plan.currency),
        )
    out.print(table)
    for line in plan.describe():
        out.print(escape(line), highlight=False)
    _warn(plan.warnings)

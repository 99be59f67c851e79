"""The ``synthetic`` sub-commands: synthetic items reviewed through files by outside reviewers,
and the acceptance summary. Their bodies are :mod:`duolabel.synthetic_decisions`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from duolabel.cli.common import ProjectOpt, _open, out
from duolabel.errors import ProjectError

__all__ = ["synthetic_app"]

synthetic_app = typer.Typer(
    help="Review the synthetic training items 'duolabel generate' kept.", no_args_is_help=True
)


@synthetic_app.command("review")
def synthetic_review(
    project: ProjectOpt = Path("."),
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write the items nobody has reviewed to this .csv or .jsonl, with empty 'decision' and "
            "'reviewer' columns for outside reviewers.",
        ),
    ] = None,
    import_: Annotated[
        Path | None,
        typer.Option(
            "--import",
            help="Record the decisions of a reviewed file: columns id, decision (accept or reject; "
            "empty: undecided) and optional reviewer (an expert or admin account).",
        ),
    ] = None,
    label: Annotated[str | None, typer.Option(help="--export: only the items of this label.")] = None,
    reviewer: Annotated[
        str | None,
        typer.Option(help="--import: the account rows without a reviewer are recorded under."),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: the extension).")
    ] = None,
) -> None:
    """Export the synthetic items waiting for review, or import reviewers' decisions.

    A file with any bad row (an unknown id, a decision other than accept / reject, an unknown
    reviewer) records nothing; every problem is listed with its row and column. Importing the
    same file again changes nothing."""
    from duolabel.synthetic_decisions import export_pending, import_decisions

    if export is not None and import_ is not None:
        raise ProjectError("give --export FILE or --import FILE, not both")
    if export is not None:
        with _open(project) as proj:
            n = export_pending(proj, export, fmt=fmt, label=label)
        out.print(
            f"Wrote {n:,} synthetic items waiting for review to {export}. Fill in 'decision' "
            f"(accept or reject), then: duolabel synthetic review --import {export} -p {project}"
        )
        return
    if import_ is None:
        raise ProjectError("give --export FILE (items to review) or --import FILE (their decisions)")
    with _open(project) as proj:
        done = import_decisions(proj, import_, reviewer=reviewer, fmt=fmt)
    out.print(
        f"Read {done.rows:,} rows of {import_}: {done.changed['accepted']:,} accepted, "
        f"{done.changed['rejected']:,} rejected, {done.unchanged:,} already so, "
        f"{done.undecided:,} left undecided."
    )


def _rate(row: dict[str, Any]) -> str:
    return "-" if row["rate"] is None else f"{row['rate']:.0%}"


@synthetic_app.command("summary")
def synthetic_summary(project: ProjectOpt = Path(".")) -> None:
    """The synthetic items and the reviewers' acceptance rate per label and per taxonomy leaf."""
    from duolabel.synthetic_decisions import review_summary

    with _open(project) as proj:
        summary = review_summary(proj)
    total = summary["total"]
    if not total["items"]:
        out.print("No synthetic items yet: run 'duolabel generate'.")
        return
    counts = ("items", "pending", "accepted", "rejected")
    for title, keys, rows in (
        ("Acceptance per label", ("label",), [*summary["by_label"], {"label": "all", **total}]),
        ("Acceptance per taxonomy leaf", ("label", "leaf"), summary["by_leaf"]),
    ):
        if not rows:
            continue
        table = Table(title=title)
        for column in (*keys, *counts, "acceptance rate"):
            table.add_column(column, justify="left" if column in keys else "right")
        for row in rows:
            table.add_row(*(escape(row[k]) for k in keys), *(f"{row[c]:,}" for c in counts), _rate(row))
        out.print(table)

"""The ``duolabel`` command: one short function per command (parse, call, print)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from duolabel.cli.common import (
    ProjectAlso,
    ProjectArg,
    ProjectOpt,
    _open,
    err,
    out,
    project_folder,
    wide_when_not_a_terminal,
)
from duolabel.cli.people import annotators_app, config_app, golden_app
from duolabel.cli.synthetic import synthetic_app
from duolabel.cli.tables import (
    _batch_table,
    _calibration_table,
    _plan_output,
    _ranking_table,
    _status_table,
    _warn,
)
from duolabel.errors import DuolabelError, Interrupted, ProjectError
from duolabel.formatting import money
from duolabel.progress import active_stage, rich_reporter

app = typer.Typer(
    help="Label text datasets with a model and people together.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(annotators_app, name="annotators")
app.add_typer(golden_app, name="golden")
app.add_typer(config_app, name="config")
app.add_typer(synthetic_app, name="synthetic")


@app.callback()
def _setup() -> None:
    wide_when_not_a_terminal()


DEFAULT_INIT_LABELER = "finetune"


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Folder to create the project in.")],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="A label (repeat).")] = None,
    labels: Annotated[str | None, typer.Option(help="Labels, comma-separated: a,b,c.")] = None,
    instruction: Annotated[
        str | None, typer.Option(help="The instructions people and the model see.")
    ] = None,
    from_: Annotated[
        Path | None, typer.Option("--from", help="Take the labels from this (golden) file's label column.")
    ] = None,
    label_column: Annotated[str, typer.Option(help="The column --from reads labels from.")] = "label",
    labeler: Annotated[
        str,
        typer.Option(
            help="The labeler the project file names (a backend: finetune, setfit, embedding, llama, "
            "openai or a plug-in's). finetune was the most accurate labeler in the benchmarks that "
            "trains on 1,000 items within minutes on a 2-core CPU (docs/benchmarks.md)."
        ),
    ] = DEFAULT_INIT_LABELER,
    model: Annotated[
        str | None,
        typer.Option(
            help="The labeler's model: openai: the model name the server knows (required); llama: a "
            "GGUF file; embedding, finetune, setfit: a sentence-transformers folder."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Overwrite an existing duolabel.yaml (its store is kept: refused when it holds labels "
            "the new ones lack)."
        ),
    ] = False,
) -> None:
    """Create a project folder with a commented duolabel.yaml (only the chosen labeler's keys)."""
    from duolabel.project import init_project

    # Empty names are passed on, for init_project to refuse: --labels "," is a mistake, not
    # a request for the default labels.
    split = [n.strip() for n in labels.split(",")] if labels is not None else []
    names = [*(label or []), *split] if label or labels is not None else None
    task = {"instructions": instruction} if instruction else {}
    entry = {"backend": labeler}
    if model is not None:
        entry["model_path" if labeler == "llama" else "model"] = model
    elif labeler == "openai":
        raise ProjectError(
            "init --labeler openai needs --model NAME, the model name the server knows "
            "(e.g. --model gpt-4o-mini); point it at your own server later with "
            "'duolabel config set labeler.base_url http://127.0.0.1:8080/v1'"
        )
    init_project(
        folder,
        labels=names,
        force=force,
        labels_from=from_,
        label_column=label_column,
        labeler=entry,
        **task,
    ).close()
    out.print(
        f"Created {folder / 'duolabel.yaml'}; edit the labels, then 'duolabel import FILE -p {folder}'."
    )


FORMAT_HELP = "csv, jsonl or parquet; label-studio (a .json export) or hf (a save_to_disk folder)."


@app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, JSONL or Parquet file of items, a Label Studio JSON export (.json) or a "
            "Hugging Face dataset folder (save_to_disk)."
        ),
    ],
    project: ProjectOpt = Path("."),
    role: Annotated[
        str,
        typer.Option(
            help="regular; golden: expert-labelled, trains and calibrates the model; control: known "
            "answers hidden among people's work, for quality control only."
        ),
    ] = "regular",
    gold: Annotated[str | None, typer.Option(help="Column holding a known label.")] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="Rename a column: FILE_COLUMN=FIELD (repeat).")
    ] = None,
    batch: Annotated[str | None, typer.Option(help="Batch name (default: the file name).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    split: Annotated[
        str | None, typer.Option(help="A dataset's split (default: every split, each its own batch).")
    ] = None,
    labeler: Annotated[
        str | None, typer.Option(help="Label Studio: store the predictions as this external labeler's.")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Label Studio: the predictions of this model_version.")
    ] = None,
    swapped: Annotated[
        bool,
        typer.Option(
            "--swapped",
            help="Pairwise controls (or golden pairs): add each pair's swapped twin, responses "
            "exchanged and gold flipped, under an id that does not say so.",
        ),
    ] = False,
) -> None:
    """Import items (a Label Studio export's annotations too); nothing is imported when any row is bad."""
    columns: dict[str, str] = {}
    for pair in map_ or []:
        if "=" not in pair:
            raise ProjectError(f"--map {pair!r}: expected FILE_COLUMN=FIELD")
        src, dst = pair.split("=", 1)
        if src in columns:
            raise ProjectError(f"--map {pair!r}: column {src!r} is already mapped to {columns[src]!r}")
        columns[src] = dst
    # A stage with its rows read: Ctrl-C names it and how far it got, as for run's stages.
    with _open(project) as proj, rich_reporter(err)(f"Importing {file}", None) as advance:
        result = proj.import_file(
            file,
            progress=advance,
            fmt=fmt,
            role=role,
            gold_column=gold,
            columns=columns,
            batch=batch,
            split=split,
            labeler=labeler,
            model_version=model_version,
            swapped=swapped or None,
        )
    if hasattr(result, "summary"):  # a Label Studio export: items, answers, predictions
        out.print(result.summary())
        return
    promoted = f", {result.promoted:,} made golden" if result.promoted else ""
    out.print(
        f"{file}: {result.rows:,} rows, {result.added:,} new items, {result.unchanged:,} already "
        f"imported{promoted}."
    )


@app.command("import-answers")
def import_answers(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, JSONL or Parquet: item, worker, label, optional seconds (or time); or a "
            "Label Studio JSON export's annotations."
        ),
    ],
    project: ProjectOpt = Path("."),
    fmt: Annotated[str | None, typer.Option("--format", help="csv, jsonl, parquet or label-studio.")] = None,
) -> None:
    """Import recorded human answers as imported workers' (accounts that cannot log in)."""
    with _open(project) as proj:
        result = proj.import_answers(file, fmt=fmt)
    if hasattr(result, "summary"):
        out.print(result.summary())
        return
    out.print(
        f"{file}: {result.rows:,} answers, {result.added:,} new, {result.unchanged:,} already imported, "
        f"{result.workers:,} workers ({result.new_workers:,} new)."
    )


@app.command("import-predictions")
def import_predictions(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, JSONL or Parquet: id, and label + confidence or one p_<label> column per "
            "label; optional cost. Or a Label Studio JSON export's predictions."
        ),
    ],
    labeler: Annotated[
        str, typer.Option(help="The external labeler's name (labeler: [{backend: external, name: NAME}]).")
    ],
    project: ProjectOpt = Path("."),
    fmt: Annotated[str | None, typer.Option("--format", help="csv, jsonl, parquet or label-studio.")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Label Studio: the predictions of this model_version.")
    ] = None,
) -> None:
    """Import predictions made elsewhere (an LLM batch job) as an external labeler's; bad rows import none."""
    with _open(project) as proj:
        result = proj.import_predictions(file, labeler=labeler, fmt=fmt, model_version=model_version)
    if hasattr(result, "summary"):
        out.print(result.summary())
        return
    if result.unchanged:
        out.print(
            f"{file}: already imported as {result.labeler} version {result.model_version}; nothing to do."
        )
        return
    skipped = f", {result.controls:,} control items skipped" if result.controls else ""
    cost = f", cost {result.cost:,.2f}" if result.cost else ""
    out.print(
        f"{file}: {result.rows:,} rows; {result.labeler} version {result.model_version}: "
        f"{result.added:,} predictions stored ({result.golden:,} on golden items, "
        f"{result.abstained:,} abstentions){skipped}{cost}."
    )


@app.command()
def label(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    labeler: Annotated[
        str | None, typer.Option(help="Run only the labeler with this name (default: all of them).")
    ] = None,
) -> None:
    """Fit the labeler(s) on the golden items and label every item."""
    with _open(project, project_option) as proj:
        results = proj.label(labeler=labeler, progress=rich_reporter(err))
    for result in results:
        abstained = f", {result.abstained:,} abstentions" if result.abstained else ""
        out.print(
            f"{result.labeler} ({result.model_version}): {result.predicted:,} items labelled, "
            f"{result.already_done:,} already done{abstained}."
        )


@app.command()
def calibrate(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
) -> None:
    """Calibrate each labeler's confidence on the golden items; prints before/after metrics."""
    with _open(project, project_option) as proj:
        results = proj.calibrate()
        ranking = proj.error_ranking()
    for result in results:
        out.print(_calibration_table(result))
    if ranking:
        out.print(_ranking_table(ranking))


@app.command("optimize-prompt")
def optimize_prompt(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    labeler: Annotated[
        str | None, typer.Option(help="The llama or openai labeler (default: the only one).")
    ] = None,
    max_calls: Annotated[
        int, typer.Option(min=1, help="Most LLM calls (items scored plus instructions written).")
    ] = 1000,
    folds: Annotated[
        int, typer.Option(min=2, max=10, help="Cross-validation folds of the golden items.")
    ] = 3,
) -> None:
    """Search an LLM labeler's instructions and demonstrations on the golden items; keeps every candidate."""
    project = project_folder(project, project_option)
    with _open(project) as proj:
        result = proj.optimize_prompt(
            labeler=labeler, max_calls=max_calls, folds=folds, reporter=rich_reporter(err)
        )
    search = result.search
    table = Table(
        title=f"Prompt of {result.labeler}: {search.folds}-fold cross-validation on the golden items"
    )
    for col in ("candidate", "accuracy (± fold std)", "ECE (± fold std)", "log-loss"):
        table.add_column(col)
    for candidate in sorted(search.candidates, key=lambda c: c.key):
        mark = (
            " (before)" if candidate is search.before else " (chosen)" if candidate is search.chosen else ""
        )
        table.add_row(
            escape(candidate.name + mark),
            f"{candidate.mean('accuracy'):.3f} ± {candidate.std('accuracy'):.3f}",
            f"{candidate.mean('ece'):.3f} ± {candidate.std('ece'):.3f}",
            f"{candidate.mean('nll'):.3f}",
        )
    out.print(table)
    before, after = search.before, search.chosen
    out.print(
        f"Before: accuracy {before.mean('accuracy'):.3f} ± {before.std('accuracy'):.3f}, "
        f"ECE {before.mean('ece'):.3f} ± {before.std('ece'):.3f}. After ({escape(after.name)}): accuracy "
        f"{after.mean('accuracy'):.3f} ± {after.std('accuracy'):.3f}, ECE {after.mean('ece'):.3f} ± "
        f"{after.std('ece'):.3f} (the best of {len(search.candidates)} candidates: optimistic). "
        f"{search.calls:,} LLM calls."
    )
    rel = result.file.relative_to(project) if result.file.is_relative_to(project) else result.file
    if search.chosen is search.before:
        out.print(f"Every candidate is in {rel}. The configured prompt scored best: nothing to change.")
        return
    out.print(
        f"Every candidate is in {rel}. To label with the chosen prompt (labeler version "
        f"{result.version_after}, now {result.version_before}), add 'prompt: {rel}' to the "
        f"{escape(result.labeler)} labeler in duolabel.yaml."
    )


@app.command()
def route(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
) -> None:
    """Accept confident model labels; send the rest to people."""
    with _open(project, project_option) as proj:
        result = proj.route(progress=rich_reporter(err))
    out.print(f"Routing: {result.message}.")
    out.print(
        f"Accepted {result.decided['accept']:,}, sent to people {result.decided['humans']:,}, "
        f"to experts {result.decided['expert']:,}, already decided {result.unchanged:,}."
    )


@app.command()
def distill(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
) -> None:
    """Teach the student model from the LLM teacher's labels; it labels once it is as good.

    The student learns from the teacher's confident labels, people's labels and the golden
    items, and labels later batches when its out-of-fold golden accuracy is at least the
    teacher's (see `distill:` in docs/configuration.md)."""
    with _open(project, project_option) as proj:
        result = proj.distill(progress=rich_reporter(err))
    again = " (recorded earlier for the same training data)" if result.reused else ""
    out.print(
        f"{result.student} ({result.student_version}) learned from {result.golden:,} golden items and "
        f"{result.taught:,} labelled regular items{again}."
    )
    out.print(escape(f"Decision: {result.decision.reason}."))


@app.command()
def generate(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    per_label: Annotated[int, typer.Option(min=1, help="Synthetic items to keep per label.")] = 10,
    mode: Annotated[
        str, typer.Option(help="zero-shot, few-shot (golden examples) or taxonomy.")
    ] = "zero-shot",
    labeler: Annotated[
        str | None, typer.Option(help="The llama or openai labeler that writes (default: synthetic.labeler).")
    ] = None,
) -> None:
    """Generate synthetic training items per label with an LLM labeler; resumable and costed.

    Items too close to a real or an earlier synthetic item are dropped; kept items train the
    embedding and fine-tuned labelers only (see `synthetic:` in docs/configuration.md)."""
    with _open(project, project_option) as proj:
        result = proj.generate(per_label=per_label, mode=mode, labeler=labeler, progress=rich_reporter(err))
    kept = ", ".join(f"{label} {n}" for label, n in result.kept.items()) or "none"
    rejected = ", ".join(f"{why} {n}" for why, n in result.rejected.items()) or "none"
    out.print(
        escape(f"Kept ({result.mode}): {kept}; rejected: {rejected}; {result.cached:,} answers cached.")
    )
    figures = ", ".join(f"{key} {value}" for key, value in result.figures.items())
    out.print(escape(f"Figures: {figures}. Cost {result.cost:.4g}, {result.seconds:.1f} s."))
    for label, leaves in result.taxonomy.items():
        out.print(escape(f"Taxonomy {label}: {'; '.join(leaves)}"))
    if result.stopped:
        err.print(escape(f"Stopped: {result.stopped}."))


@app.command()
def aggregate(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    refresh: Annotated[
        bool, typer.Option(help="Re-aggregate every item people labelled, not only new ones.")
    ] = False,
) -> None:
    """Turn complete sets of human answers into final labels (the method of `aggregation.method`)."""
    with _open(project, project_option) as proj:
        result = proj.aggregate(refresh=refresh)
    version = f" (aggregation {result.version})" if result.version else ""
    out.print(
        f"{result.finalized:,} items finalized from {result.answers:,} answers{version}; "
        f"{result.waiting:,} items still wait for people."
    )


@app.command()
def export(
    file: Annotated[
        Path,
        typer.Argument(
            help="Output .csv, .jsonl or .parquet file, Label Studio tasks (.json) or a folder (hf)."
        ),
    ],
    project: ProjectOpt = Path("."),
    include_pending: Annotated[bool, typer.Option(help="Also write items without a final label.")] = False,
    include_synthetic: Annotated[
        bool,
        typer.Option(
            help="Also write the synthetic training items, flagged in a 'synthetic' column, with "
            "their review (synthetic_review, synthetic_reviewer) and the LLM judge's judged_label."
        ),
    ] = False,
    fmt: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
) -> None:
    """Write final labels with their provenance."""
    with _open(project) as proj:
        n = proj.export(file, fmt=fmt, include_pending=include_pending, include_synthetic=include_synthetic)
    out.print(f"Wrote {n:,} rows to {file}.")


@app.command()
def status(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    watch: Annotated[
        float | None,
        typer.Option(help="Print the status again every this many seconds, until Ctrl-C.", min=0.1),
    ] = None,
) -> None:
    """Counts per stage and the cost so far."""
    folder = project_folder(project, project_option)
    if watch is None:
        _print_status(folder)
        return
    try:
        while True:
            out.clear()
            out.print(f"[dim]{time.strftime('%H:%M:%S')}: every {watch:g} s, Ctrl-C to stop[/]")
            _print_status(folder)
            time.sleep(watch)
    except Interrupted:
        return  # stopping the watch is how it ends, not an error


def _print_status(project: Path) -> None:
    from duolabel.pipeline import batch_reports

    with _open(project) as proj:
        status_now = proj.status()
        out.print(_status_table(status_now))
        reports = batch_reports(proj)
        learning = proj.learning()
        warnings = proj.sanity_checks()
    if status_now.routing:
        out.print(escape(f"Routing: {status_now.routing}."))
    if status_now.labeling:
        out.print(escape(f"Labeling: {status_now.labeling}."))
    if status_now.privacy:
        out.print(escape(f"Privacy: {status_now.privacy}."))
    if status_now.synthetic:
        out.print(escape(f"Synthetic: {status_now.synthetic}."))
    for alarm in status_now.alarms:
        out.print(f"[bold red]alarm:[/] {escape(alarm.message)}")
    _warn(warnings)
    if len(reports) > 1:
        out.print(_batch_table(reports))
    if learning is None:
        out.print(
            "Learning: nothing measured yet (the learning curve is measured when a model is "
            "trained: 'duolabel calibrate' or 'duolabel run')."
        )
    else:
        out.print(f"Learning ({learning.strategy}): {escape(learning.describe())}.")


@app.command()
def plan(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
) -> None:
    """What a run would send, spend and ask of people; measured on a few items, stores nothing."""
    with _open(project, project_option) as proj:
        _plan_output(proj.plan())


@app.command()
def run(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show the plan (as 'duolabel plan'); store nothing.")
    ] = False,
) -> None:
    """The whole loop: import, label, calibrate, route, aggregate, export. Resumable."""
    project = project_folder(project, project_option)
    with _open(project) as proj:
        if dry_run:
            _plan_output(proj.plan())
            return
        summary = proj.run(progress=rich_reporter(err), imported=lambda: _warn(proj.sanity_checks()))
    for result in summary.imports:
        out.print(f"{result.file}: {result.added:,} new items, {result.unchanged:,} already imported.")
    if summary.calibration:
        cal = summary.calibration[-1]
        out.print(
            f"Calibration ({cal.labeler}): golden accuracy {cal.after['accuracy']:.1%}, "
            f"ECE {cal.before['ece']:.3f} -> {cal.after['ece']:.3f} (cross-validated)."
        )
    elif "calibration" in summary.extra:
        out.print(f"Calibration: {summary.extra['calibration']}.")
    else:
        out.print("Every batch is finished: nothing to label or route.")
    if summary.route is not None:
        out.print(f"Routing: {summary.route.message}.")
    if summary.golden is not None:
        out.print(escape(f"Golden items: {summary.golden.describe()}."))
    if summary.status.labeling:
        out.print(escape(f"Labeling: {summary.status.labeling}."))
    out.print(_status_table(summary.status))
    if len(summary.batches) > 1:
        out.print(_batch_table(summary.batches))
    for alarm in summary.status.alarms:
        out.print(f"[bold red]alarm:[/] {escape(alarm.message)}")
    out.print(f"Wrote {summary.exported:,} final labels to {summary.export_path}.")
    if summary.waiting_batch is not None and len(summary.batches) > 1:
        out.print(
            f"Batch {summary.waiting_batch!r} waits for people; later batches start once its answers "
            "are in and 'duolabel run' is started again."
        )
    if summary.status.waiting_for_people:
        out.print(
            f"{summary.status.waiting_for_people:,} items wait for people. Next: "
            f"'duolabel annotators add NAME -p {project}', then 'duolabel serve {project}'."
        )


#: The last line of an error about simulate --curve's file.
NO_CURVE = "No curve was written."


@app.command()
def simulate(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    answers: Annotated[
        Path,
        typer.Option(
            "--answers",
            "-a",
            help="Recorded answers: annotations.jsonl or a CSV with item, worker, label (and optionally "
            "role: 'expert' marks an expert's answer). A relative path is relative to the project "
            "folder, like every path in duolabel.yaml.",
        ),
    ] = Path("annotations.jsonl"),
    from_store: Annotated[
        bool,
        typer.Option(
            "--from-store",
            help="Replay the answers people gave in this project (web app or import-answers) "
            "instead of a file (multi-label and spans projects replay only these).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the order in which recorded answers are drawn.")] = 0,
    expert_accuracy: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="How often an expert is right on an escalated item with no recorded expert answer "
            "(instead of the project's routing.expert_accuracy).",
        ),
    ] = None,
    curve: Annotated[Path | None, typer.Option(help="Also write the realised curve to this CSV.")] = None,
    gold: Annotated[
        Path | None,
        typer.Option(
            help="Known labels of items the project already has (the id column and --gold-column), "
            "instead of their imported gold column: no second project needed. Relative to the "
            "project folder, like --answers."
        ),
    ] = None,
    gold_column: Annotated[str, typer.Option(help="The column of --gold holding the labels.")] = "gold",
    sample_share: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            max=1.0,
            help="Also certify the dataset-level target without golden items, from a random sample of "
            "this share of the replayed items labelled by the recorded answers (PAC-Labels-style).",
        ),
    ] = None,
) -> None:
    """Replay the routing policies on items with known labels and recorded human answers.

    Multi-label and spans projects replay the answers in the store (--from-store).
    """
    from duolabel.files import writable_file
    from duolabel.simulate import HYBRID, read_gold, simulate_project

    with _open(project, project_option) as proj:
        if proj.config.task.type in ("multi_label", "spans"):  # lists: cli/lists.py
            from duolabel.cli.lists import list_simulation_table

            given = {"--gold": gold, "--curve": curve, "--sample-share": sample_share}
            unsupported = [name for name, value in given.items() if value is not None]
            answers_file = None if from_store else proj.resolve(answers)
            table = list_simulation_table(
                proj, answers_file, unsupported=unsupported, expert_accuracy=expert_accuracy
            )
            out.print(table)
            return
        if curve is not None:  # told before the replay, not after it
            writable_file(curve, outcome=NO_CURVE)
        known = None if gold is None else read_gold(proj, proj.resolve(gold), column=gold_column)
        result = simulate_project(
            proj,
            None if from_store else proj.resolve(answers),
            seed=seed,
            expert_accuracy=expert_accuracy,
            gold=known,
            sample_share=sample_share,
        )
        currency = proj.config.costs.currency
    table = Table(
        title=f"Simulation ({currency}; crowd majority vote over all answers: {result.crowd_accuracy:.3f})",
        caption=f"{HYBRID}. Experts: {result.expert_assumption}.",
    )
    for column in (
        "policy",
        "operating point",
        "human accuracy",
        "model accuracy",
        "hybrid accuracy",
        "human cost reduction",
        "human share",
        "expert answers",
        "cost",
        "ran out",
    ):
        table.add_column(column, justify="left" if column in ("policy", "operating point") else "right")
    for row in result.rows:
        table.add_row(
            row.policy,
            row.point,
            f"{row.human_accuracy:.3f}",
            f"{row.model_accuracy:.3f}",
            f"{row.hybrid_accuracy:.3f}",
            f"{row.cost_reduction:.0%}",
            f"{row.human_share:.0%}",
            f"{row.expert_answers:,} ({row.expert_recorded:,} recorded)",
            money(row.cost, currency),
            f"{row.ran_out:,}",
        )
    out.print(table)
    for row in result.rows:
        if row.guarantee and row.policy == "threshold":
            out.print(f"{row.point}: {row.guarantee}.")
    if curve is not None:
        import csv

        from duolabel.files import atomic_write, defuse_formula

        with (
            atomic_write(curve, outcome=NO_CURVE) as tmp,
            tmp.open("w", newline="", encoding="utf-8") as handle,
        ):
            writer = csv.writer(handle)
            writer.writerow(list(result.curve[0]))
            writer.writerows([defuse_formula(v) for v in row.values()] for row in result.curve)
        out.print(f"Wrote the curve to {curve}.")


@app.command()
def report(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file to write (default: PROJECT/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML report: curve, calibration, cost, confusion, routing, people."""
    from duolabel.report import write_report

    with _open(project, project_option) as proj:
        path = write_report(proj, output or proj.resolve("report.html"))
    out.print(f"Wrote {path}.")


@app.command()
def audit(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    rate: Annotated[
        float | None, typer.Option(help="Share of shipped labels to draw (default: audit.sample_rate).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the draw (default: a fresh one).")] = None,
    report_only: Annotated[
        bool, typer.Option("--report", help="Only show the estimates from the audits answered so far.")
    ] = False,
) -> None:
    """Draw shipped labels into the experts' audit queue; show the audited accuracy per source."""
    from duolabel.stages.audit import alarms, apply_expert_answers, audit_estimates, draw_audit

    with _open(project, project_option) as proj:
        if not report_only:
            drawn = draw_audit(proj, rate=rate, seed=seed)
            strata = ", ".join(f"{name}: {n}" for name, n in drawn.strata.items()) or "nothing to draw"
            out.print(f"Drew {drawn.drawn:,} final labels for expert audit ({strata}).")
        apply_expert_answers(proj)
        estimates = audit_estimates(proj)
        found = alarms(proj)
        confidence = proj.config.audit.confidence
    if estimates:
        table = Table(title=f"Audited accuracy of shipped labels ({confidence:.0%} intervals)")
        for column in ("source", "audited", "expert agreed", "accuracy", "interval"):
            table.add_column(column, justify="left" if column == "source" else "right")
        for e in estimates:
            table.add_row(
                e.source,
                f"{e.audited:,}",
                f"{e.agreed:,}",
                f"{e.accuracy:.1%}",
                f"{e.low:.1%} – {e.high:.1%}",
            )
        out.print(table)
    else:
        out.print("No audit has been answered yet: experts answer them on the web app's expert page.")
    for alarm in found:
        out.print(f"[bold red]alarm:[/] {escape(alarm.message)}")


@app.command()
def serve(
    project: ProjectArg = None,
    project_option: ProjectAlso = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (uvicorn workers).")] = 1,
    keep_alive: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds an idle connection stays open; keep it longer than a reverse proxy's "
            "(nginx: keepalive_timeout, 60 s by default).",
        ),
    ] = 75,
) -> None:
    """Serve the annotation web app."""
    try:
        from duolabel.web import serve as serve_app
    except ModuleNotFoundError as exc:
        raise DuolabelError(f"the web app needs {exc.name!r}: pip install 'duolabel[web]'") from None
    with _open(project, project_option) as proj:
        out.print(f"Annotators log in at http://{host}:{port}/ (Ctrl+C stops).")
        serve_app(proj, host=host, port=port, workers=workers, keep_alive=keep_alive)


def command_paths() -> list[list[str]]:
    """Every command and group as its argv path (for --help tests and the CLI reference)."""
    import typer.main

    def walk(group: object, prefix: list[str]) -> list[list[str]]:
        paths = [prefix]
        for name, sub in sorted(getattr(group, "commands", {}).items()):
            paths += walk(sub, [*prefix, name])
        return paths

    return walk(typer.main.get_command(app), [])


def _interrupted(signum: int, frame: object) -> None:
    # Every stage commits as it goes (a chunk of predictions with its ledger entry, each
    # answer, each routing decision) and a re-run skips what is done: say so, not "Aborted!".
    stage = active_stage()
    during = ""
    if stage is not None:
        description, done, total = stage
        of = f" of {total:,}" if total is not None else ""
        during = f" during '{description}' ({done:,}{of} done; its finished chunks are kept)"
    raise Interrupted(
        f"stopped by Ctrl-C{during}. Everything finished before it is kept in the store (labelled "
        "chunks, answers, routing decisions, runs); run the same command again to continue from there"
    )


def main() -> None:
    """Entry point: user mistakes become one line and exit code 2, never a traceback."""
    signal.signal(signal.SIGINT, _interrupted)
    try:
        app()
    except Interrupted as exc:
        err.print(f"[bold yellow]interrupted:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except DuolabelError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A path the user gave that the system refused: a folder where a file was meant, a
        # file where a folder was meant, no permission, a read-only or special file system.
        # The commands check the paths they expect mistakes in; this names the path for the rest.
        err.print(f"[bold red]error:[/] {escape(_os_error(exc))}", highlight=False, soft_wrap=True)
        sys.exit(DuolabelError.exit_code)


def _os_error(exc: OSError) -> str:
    """One line for an operating-system error: the path, what went wrong, and that nothing
    more was done.

    Examples
    --------
    >>> _os_error(IsADirectoryError(21, "Is a directory", "out"))
    "'out': is a directory; the command stopped there"
    >>> _os_error(OSError("disk full"))
    'disk full; the command stopped there'
    """
    reason = (exc.strerror or str(exc)).rstrip(".")
    if exc.filename is None:
        return f"{reason}; the command stopped there"
    return f"{str(exc.filename)!r}: {reason[:1].lower()}{reason[1:]}; the command stopped there"

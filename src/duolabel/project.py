"""A project: a folder with ``duolabel.yaml`` and its store. The library's entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duolabel.config import PROJECT_FILE, TaskConfig, load_config, parse_config, render_config
from duolabel.context import Context
from duolabel.errors import ProjectError, shown
from duolabel.store import open_store

__all__ = ["Project", "init_project"]


class Project(Context):
    """An open project: its validated configuration and its store.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> project = duolabel.init_project(folder, labels=["spam", "ham"])
    >>> project.config.task.label_names
    ['spam', 'ham']
    >>> project.close()
    """

    @classmethod
    def open(cls, path: str | Path) -> Project:
        """Open the project in folder ``path`` (its store is created or migrated)."""
        folder = Path(path)
        if not folder.is_dir():
            raise ProjectError(f"{folder}: no such project folder; create one with 'duolabel init {folder}'")
        config = load_config(folder)
        # The web app's request threads each hold a connection; one or two more for the rest.
        connections = config.web.threads + 2
        return cls(folder, config, open_store(config.database_url, folder, connections=connections))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the stages, each a thin call into its module ---------------------

    def add_items(self, frame: Any, **options: Any) -> Any:
        """Import a pandas DataFrame of items; options as for :meth:`import_file`."""
        from duolabel.io import import_frame

        return import_frame(self.store, self.config.task, frame, **options)

    def import_file(self, path: str | Path | Any, **options: Any) -> Any:
        """Import a CSV / JSONL / Parquet file (``role``, ``gold_column``, ``columns``, ``batch``),
        a Hugging Face ``Dataset``, ``DatasetDict`` or ``save_to_disk`` folder (``split``), or a
        Label Studio JSON export with its annotations and, given ``labeler``, its predictions:
        :func:`duolabel.integrations.import_items`."""
        from duolabel.integrations import import_items

        result = import_items(self, path, **options)
        self.store.analyze()  # a server may be running: plan its next-task on the new rows
        return result

    def import_answers(self, path: str | Path, *, fmt: str | None = None) -> Any:
        """Import recorded human answers (``item, worker, label``, optional ``seconds``, or a
        Label Studio export's annotations) as the answers of imported workers; a file with any
        bad row imports nothing."""
        from duolabel.integrations import integration

        result: Any
        if integration(path, fmt) == "label-studio":
            from duolabel.integrations.label_studio import import_label_studio

            result = import_label_studio(self, path, items=False)
        else:
            from duolabel.io import read_answers
            from duolabel.people.imported import record_imported_answers

            answers = read_answers(self.store, self.config.task, path, fmt=fmt)
            result = record_imported_answers(self.store, answers, source=str(path))
        self.store.analyze()
        return result

    def import_predictions(self, data: str | Path | Any, *, labeler: str, **options: Any) -> Any:
        """Store a file's (or a DataFrame's, or a Label Studio export's) predictions as those
        of the external labeler ``labeler`` (``labeler: [{backend: external, name: NAME}]``
        in the project file); options ``fmt`` and ``tolerance``:
        :func:`duolabel.predictions.import_predictions`, ``model_version`` for a Label Studio
        export whose tasks have several predictions."""
        from duolabel.integrations import integration

        if integration(data, options.get("fmt")) == "label-studio":
            from duolabel.integrations.label_studio import import_label_studio

            version = options.get("model_version")
            return import_label_studio(
                self, data, items=False, answers=False, labeler=labeler, model_version=version
            )
        from duolabel.predictions import import_predictions

        if options.pop("model_version", None) is not None:
            raise ProjectError("--model-version applies only to a Label Studio export")
        return import_predictions(self, data, labeler=labeler, **options)

    def import_data(self, **options: Any) -> Any:
        """Import the files named under ``data`` in the project file."""
        from duolabel.pipeline import import_sources

        results = import_sources(self, **options)
        self.store.analyze()
        return results

    def export(self, path: str | Path, **options: Any) -> int:
        """Write final labels with their provenance (CSV, JSONL, Parquet, Label Studio tasks
        with ``fmt="label-studio"`` or a ``.json`` path, a Hugging Face dataset folder with
        ``fmt="hf"``); returns the rows written."""
        from duolabel.integrations import export_to
        from duolabel.stages.distill import labeling_version

        options.setdefault("model_version", labeling_version(self))
        options.setdefault("task", self.config.task)
        return export_to(self, path, **options)

    def to_pandas(self, what: str = "final") -> Any:
        """The project's ``"items"``, ``"predictions"``, ``"answers"`` or ``"final"`` labels as
        a pandas DataFrame, with the columns of the file duolabel reads or writes for each:
        :func:`duolabel.integrations.frames.to_pandas`.

        Examples
        --------
        >>> import duolabel, pandas as pd, tempfile
        >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
        >>> project.add_items(pd.DataFrame({"id": ["m1"], "text": ["Win a prize!"]})).added
        1
        >>> project.to_pandas("items")[["id", "text", "role"]]
           id          text     role
        0  m1  Win a prize!  regular
        >>> len(project.to_pandas("final"))  # nothing is labelled yet
        0
        >>> project.close()
        """
        from duolabel.integrations.frames import to_pandas
        from duolabel.stages.distill import labeling_version

        return to_pandas(self.store, self.config.task, what, model_version=labeling_version(self))

    def label(self, **options: Any) -> Any:
        from duolabel.pipeline import label

        return label(self, **options)

    def calibrate(self) -> Any:
        from duolabel.pipeline import calibrate

        return calibrate(self)

    def optimize_prompt(self, **options: Any) -> Any:
        """Search an LLM labeler's prompt on the golden items (``duolabel optimize-prompt``)."""
        from duolabel.optimize_prompt import optimize_prompt

        return optimize_prompt(self, **options)

    def route(self, **options: Any) -> Any:
        from duolabel.pipeline import route

        return route(self, **options)

    def aggregate(self, *, refresh: bool = False) -> Any:
        """People's answers become final labels; then experts' answers replace theirs."""
        from duolabel.pipeline import aggregate

        return aggregate(self, refresh=refresh)

    def distill(self, **options: Any) -> Any:
        """Teach the distillation student and decide whether it replaces its teacher."""
        from duolabel.pipeline import distill

        return distill(self, **options)

    def generate(self, *, per_label: int, **options: Any) -> Any:
        """Generate synthetic training items (``mode``, ``labeler``, ``progress``):
        :func:`duolabel.synthetic.generate_synthetic`."""
        from duolabel.synthetic import generate_synthetic

        return generate_synthetic(self, per_label=per_label, **options)

    def status(self) -> Any:
        from duolabel.pipeline import project_status

        return project_status(self)

    def suggest_golden(self, n: int, *, export: str | Path | None = None) -> Any:
        """The ``n`` items whose gold label would teach the model most (the model that labels:
        a distilled student once it has won), queued for experts (or written to ``export``):
        :func:`duolabel.stages.learn.suggest_golden`."""
        from duolabel.stages.distill import labeling_context
        from duolabel.stages.learn import suggest_golden

        return suggest_golden(labeling_context(self), n, export=export)

    def error_ranking(self) -> dict[str, float]:
        """AUROC with which each signal (confidence, margin, entropy, ensemble disagreement,
        prompt-variant disagreement, nearest-golden accuracy) and their combination rank the
        model's errors on the golden items: :func:`duolabel.stages.route.error_ranking_of` (for
        a list answer, of the model's whole list)."""
        from duolabel.pipeline import plan
        from duolabel.stages.distill import labeling_context
        from duolabel.stages.route import error_ranking_of

        return error_ranking_of(labeling_context(self), plan(self))

    def learning(self) -> Any:
        """The learning curve and whether more golden items would pay off, as measured when the
        model that labels (a distilled student once it has won) was trained; None before."""
        from duolabel.stages.distill import labeling_context
        from duolabel.stages.learn import learning_status

        return learning_status(labeling_context(self))

    def plan(self) -> Any:
        """What a run would send, spend and ask of people, measured on a few items; stores
        nothing (:func:`duolabel.plan.plan_project`)."""
        from duolabel.plan import plan_project

        return plan_project(self)

    def sanity_checks(self) -> list[str]:
        """Warnings about settings that cannot work as configured (:func:`duolabel.plan.sanity_checks`)."""
        from duolabel.plan import sanity_checks

        return sanity_checks(self)

    def run(self, **options: Any) -> Any:
        """The whole loop: import, label, calibrate, route, aggregate, export."""
        from duolabel.pipeline import run_project

        return run_project(self, **options)


def _check_label_names(labels: list[str]) -> None:
    """Refuse an empty list of labels, an empty name (``--labels ","``), which would otherwise
    leave the default labels or a label nobody can choose, and a name given twice."""
    example = "give every label a name, e.g. --labels spam,ham (or no labels for positive, negative)"
    if not labels:
        raise ProjectError(f"the list of labels is empty; {example}")
    empty = [str(i) for i, name in enumerate(labels, 1) if not name.strip()]
    if len(empty) == 1:
        raise ProjectError(f"label {empty[0]} of {shown(labels)} is empty; {example}")
    if empty:
        raise ProjectError(f"labels {', '.join(empty)} of {shown(labels)} are empty; {example}")
    twice = sorted({name for name in labels if labels.count(name) > 1})
    if twice:
        raise ProjectError(f"label {shown(twice[0])} is given twice; give each label once")


def init_project(
    path: str | Path,
    *,
    labels: list[str] | None = None,
    force: bool = False,
    labels_from: str | Path | None = None,
    label_column: str = "label",
    labeler: dict[str, Any] | None = None,
    **task: Any,
) -> Project:
    """Create a project folder with a commented ``duolabel.yaml`` and an empty store.

    ``labels_from`` takes the labels from a (golden) file's ``label_column``, in the order
    they first appear; ``labeler`` is one ``labeler`` entry (``{"backend": "finetune"}``;
    None keeps the embedded default); ``task`` holds other task settings (``instructions=...``).
    """
    folder = Path(path)
    target = folder / PROJECT_FILE
    if target.exists() and not force:
        raise ProjectError(f"{target} already exists; pass --force to overwrite it")
    if labels_from is not None:
        from duolabel.io import label_values

        labels = [*(labels or []), *label_values(labels_from, label_column)]
    if labels is not None:
        _check_label_names(labels)
    names = labels or ["positive", "negative"]
    config = parse_config(
        {
            "task": {
                "labels": [{"name": n, "description": f"The item is {n}."} for n in names],
                "instructions": "Choose the label that best describes the text.",
                **task,
            },
            **({"labeler": [labeler]} if labeler is not None else {}),
        },
        source="duolabel init's options",  # no file was read: what they would make is refused
    )
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{folder} is a file; a project is a folder: give a new folder's name")
    _check_kept_store(folder, config.task)
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(render_config(config), encoding="utf-8")
    return Project.open(folder)


def _check_kept_store(folder: Path, task: TaskConfig) -> None:
    """Refuse to write a project file over a store (``duolabel.db``, kept by ``--force``) that
    holds gold or final labels the new ``task`` would refuse as answers (its task type's
    ``check_answer``): the new project would read and export them as if they were its own
    (found by an independent tester)."""
    from sqlalchemy import select

    from duolabel.core.tasks import AnswerError, task_type
    from duolabel.store import DB_FILE, FinalLabel, Item, open_store

    if not (folder / DB_FILE).is_file():
        return
    store = open_store(None, folder)
    try:
        with store.read() as session:
            found = {
                *session.scalars(select(Item.gold_label).where(Item.gold_label.is_not(None)).distinct()),
                *session.scalars(select(FinalLabel.label).distinct()),
            }
    finally:
        store.close()
    kind, labels = task_type(task.type), task.label_names
    outside = []
    for label in sorted(found):
        try:
            kind.check_answer(label, labels)
        except AnswerError:
            outside.append(label)
    if outside:
        raise ProjectError(
            f"{folder / DB_FILE} holds items labelled {shown(outside)}, which the new labels lack; "
            "the new project would keep and export them. Create the project in a new folder, or "
            "give labels that include them; nothing was changed"
        )

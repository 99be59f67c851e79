"""A project: a folder with ``duolabel.yaml`` and its store. The library's entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duolabel.config import PROJECT_FILE, load_config, parse_config, render_config
from duolabel.context import Context
from duolabel.errors import ProjectError
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
        return cls(folder, config, open_store(config.database_url, folder))

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

    def import_file(self, path: str | Path, **options: Any) -> Any:
        """Import a CSV / JSONL / Parquet file (``role``, ``gold_column``, ``columns``, ``batch``)."""
        from duolabel.io import import_file

        return import_file(self.store, self.config.task, path, **options)

    def import_answers(self, path: str | Path, *, fmt: str | None = None) -> Any:
        """Import recorded human answers (``item, worker, label``, optional ``seconds``) as
        the answers of imported workers; a file with any bad row imports nothing."""
        from duolabel.io import read_answers
        from duolabel.people.imported import record_imported_answers

        answers = read_answers(self.store, self.config.task, path, fmt=fmt)
        return record_imported_answers(self.store, answers, source=str(path))

    def import_predictions(self, data: str | Path | Any, *, labeler: str, **options: Any) -> Any:
        """Store a file's (or a DataFrame's) predictions as those of the external labeler
        ``labeler`` (``labeler: [{backend: external, name: NAME}]`` in the project file);
        options ``fmt`` and ``tolerance``: :func:`duolabel.predictions.import_predictions`."""
        from duolabel.predictions import import_predictions

        return import_predictions(self, data, labeler=labeler, **options)

    def import_data(self, **options: Any) -> Any:
        """Import the files named under ``data`` in the project file."""
        from duolabel.pipeline import import_sources

        return import_sources(self, **options)

    def export(self, path: str | Path, **options: Any) -> int:
        """Write final labels with their provenance; returns the rows written."""
        from duolabel.export import export_labels
        from duolabel.stages.distill import labeling_version

        options.setdefault("model_version", labeling_version(self))
        options.setdefault("task", self.config.task)
        return export_labels(self.store, path, **options)

    def label(self, **options: Any) -> Any:
        from duolabel.pipeline import label

        return label(self, **options)

    def calibrate(self) -> Any:
        from duolabel.pipeline import calibrate

        return calibrate(self)

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
        """The ``n`` items whose gold label would teach the model most, queued for experts
        (or written to ``export``): :func:`duolabel.stages.learn.suggest_golden`."""
        from duolabel.stages.learn import suggest_golden

        return suggest_golden(self, n, export=export)

    def learning(self) -> Any:
        """The learning curve and whether more golden items would pay off, as measured when the
        model that labels (a distilled student once it has won) was trained; None before."""
        from duolabel.stages.distill import labeling_context
        from duolabel.stages.learn import learning_status

        return learning_status(labeling_context(self))

    def run(self, **options: Any) -> Any:
        """The whole loop: import, label, calibrate, route, aggregate, export."""
        from duolabel.pipeline import run_project

        return run_project(self, **options)


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
    names = labels or ["positive", "negative"]
    config = parse_config(
        {
            "task": {
                "labels": [{"name": n, "description": f"The item is {n}."} for n in names],
                "instructions": "Choose the label that best describes the text.",
                **task,
            },
            **({"labeler": [labeler]} if labeler is not None else {}),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(render_config(config), encoding="utf-8")
    return Project.open(folder)

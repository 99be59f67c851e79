"""``duolabel report`` for multi-label projects: one self-contained HTML file with the figures
that make sense for lists.

On the golden items (their cross-fitted predictions, so the figures are honest): each label's
precision, recall, F1 and calibration, the lists' subset accuracy and micro-F1, and how well the
whole list's chance of being right is calibrated, as the per-label product and as calibrated on
the golden items (:mod:`duolabel.core.wholelist`, what routing reads), with a reliability table.
Then the routing: the operating point, how many items went to people (the human share) and where
the final labels came from.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from duolabel.core.multilabel import answer_sets
from duolabel.core.probs import as_matrix
from duolabel.core.tasks import MultiLabel
from duolabel.core.wholelist import LIST_CHANCE, chance_bins, chance_calibration_error, list_scores
from duolabel.errors import ProjectError
from duolabel.files import atomic_write
from duolabel.formatting import fmt_figure
from duolabel.store import FinalLabel, Item, Prediction, Route

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["list_report_figures", "routing_figures", "write_list_report"]

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>duolabel report: {{ name }}</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
</style></head><body>
<h1>{{ name }}: multi-label report</h1>
<p>Model version {{ version }}; {{ golden }} golden items (cross-fitted predictions);
generated {{ generated }}.</p>
<h2>Lists on the golden items</h2>
<table><tr><th>figure</th><th>value</th></tr>
{% for name, value in overall %}<tr><td>{{ name }}</td><td>{{ value }}</td></tr>{% endfor %}
</table>
<h2>Per label</h2>
<table><tr><th>label</th><th>golden items with it</th><th>precision</th><th>recall</th><th>F1</th>
<th>calibration error</th></tr>
{% for row in per_label %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Calibration of the whole-list chance</h2>
<p>The chance that an item's whole list is right: the per-label product (labels taken as
independent) and as calibrated on the golden items, which routing reads. Error: mean
|chance - share right| over equal-mass bins.</p>
<table><tr><th>chance</th><th>calibration error</th></tr>
{% for name, value in list_calibration %}<tr><td>{{ name }}</td><td>{{ value }}</td></tr>{% endfor %}
</table>
<h3>Reliability (calibrated chance)</h3>
<table><tr><th>bin</th><th>items</th><th>mean chance</th><th>share right</th></tr>
{% for row in reliability %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
"""


def list_report_figures(project: Project, version: str) -> dict[str, Any]:
    """The report's figures on the golden items' cross-fitted predictions of ``version``."""
    labels = project.config.task.label_names
    with project.store.read() as session:
        rows = session.execute(
            select(Prediction.calibrated, Prediction.label, Prediction.features, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(Prediction.model_version == version, Prediction.out_of_fold.is_(True))
            .where(Prediction.calibrated.is_not(None), Item.role == "golden", Item.gold_label.is_not(None))
            .order_by(Item.seq)
        ).all()
    if not rows:
        raise ProjectError("no calibrated golden items to report on: run 'duolabel calibrate' first")
    probs = as_matrix([r.calibrated for r in rows], labels)
    given, gold = answer_sets([r.label for r in rows]), answer_sets([r.gold_label for r in rows])
    scores = list_scores(given, gold, labels)
    Y = np.array([[label in set(g) for label in labels] for g in gold], dtype=float)
    right = np.array([r.label == r.gold_label for r in rows], dtype=float)
    product = MultiLabel().routing_probs(probs, [r.label for r in rows], labels)[:, 0]
    stored = [(r.features or {}).get(LIST_CHANCE) for r in rows]
    calibrated = np.array([product[i] if c is None else c for i, c in enumerate(stored)], dtype=float)
    empty = np.array([r.label == "[]" for r in rows])
    reliability = reliability_rows(calibrated, right)
    return {
        "golden": len(rows),
        "overall": [
            ("subset accuracy (whole list right)", fmt_figure(scores.subset_accuracy)),
            ("micro-F1", fmt_figure(scores.micro_f1)),
            ("empty lists given", f"{int(empty.sum())}"),
            ("empty lists right", fmt_figure(right[empty].mean()) if empty.any() else "–"),
        ],
        "per_label": [
            (
                label,
                scores.support[label],
                fmt_figure(scores.precision[label]),
                fmt_figure(scores.recall[label]),
                fmt_figure(scores.f1[label]),
                fmt_figure(chance_calibration_error(probs[:, j], Y[:, j])),
            )
            for j, label in enumerate(labels)
        ],
        "list_calibration": [
            ("per-label product", fmt_figure(chance_calibration_error(product, right))),
            (
                "calibrated on the golden items (routed on)",
                fmt_figure(chance_calibration_error(calibrated, right)),
            ),
        ],
        "reliability": reliability,
    }


def reliability_rows(chances: np.ndarray, right: np.ndarray) -> list[tuple[str, int, str, str]]:
    """The reports' reliability table: per equal-mass bin of the stated chance (10 at most),
    its number, items, mean chance and share right.

    Examples
    --------
    >>> reliability_rows(np.array([0.9, 0.2]), np.array([1.0, 0.0]))
    [('1', 1, '0.200', '0.000'), ('2', 1, '0.900', '1.000')]
    """
    return [
        (f"{k + 1}", count, fmt_figure(chance), fmt_figure(share))
        for k, (count, chance, share) in enumerate(chance_bins(chances, right))
    ]


def write_list_report(project: Project, path: Path, version: str) -> Path:
    """Write a multi-label project's report for model ``version`` to ``path`` (one HTML file).

    Examples
    --------
    >>> write_list_report  # doctest: +ELLIPSIS
    <function write_list_report at ...>
    """
    return render_report(project, path, version, _TEMPLATE, list_report_figures(project, version))


# The routing part both list-valued reports end with (filled by routing_figures).
ROUTING_SECTION = """<h2>Routing</h2>
<p>{{ guarantee }}</p>
<table><tr><th>decision</th><th>items</th></tr>
{% for k, v in routes %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}
<tr><td>human share</td><td>{{ human_share }}</td></tr>
</table>
<h3>Final labels by source</h3>
<table><tr><th>source</th><th>items</th></tr>
{% for k, v in finals %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}
</table>
</body></html>
"""


def render_report(project: Project, path: Path, version: str, template: str, figures: dict[str, Any]) -> Path:
    """Render a list-valued type's report ``template`` with its ``figures`` and the routing
    figures (:func:`routing_figures`) to ``path``; shared by the multi-label and spans reports."""
    from jinja2 import Environment

    html = (
        Environment(autoescape=True)
        .from_string(template + ROUTING_SECTION)
        .render(
            name=project.path.name,
            version=version,
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            **routing_figures(project),
            **figures,
        )
    )
    with atomic_write(path, outcome="No report was written.") as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path


def routing_figures(project: Project) -> dict[str, Any]:
    """The routing part of a list report: the operating point, decisions, human share, and
    final labels by source (shared with the spans report, :mod:`duolabel.report_spans`)."""
    from duolabel.pipeline import plan as plan_routing

    with project.store.read() as session:
        routes = Counter(
            dict(session.execute(select(Route.decision, func.count()).group_by(Route.decision)).all())
        )
        finals = dict(
            session.execute(select(FinalLabel.source, func.count()).group_by(FinalLabel.source)).all()
        )
    routed = sum(routes.values())
    people = routes.get("humans", 0) + routes.get("expert", 0)
    return {
        "guarantee": plan_routing(project).point.describe(),
        "routes": [(k, routes.get(k, 0)) for k in ("accept", "humans", "expert")],
        "human_share": fmt_figure(people / routed) if routed else "– (nothing routed yet)",
        "finals": sorted(finals.items()),
    }

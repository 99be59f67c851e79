"""``duolabel report`` for spans projects: one self-contained HTML file with the figures that make
sense for span lists.

On the golden items (their cross-fitted predictions, so the figures are honest): exact-match span
precision, recall and F1 of the model (micro, over all spans) and per label, whole-item accuracy
(the item's span list equals gold), and how well the item score (the calibrated chance that the
whole list is right, what routing reads) is calibrated, with a reliability table. Then the
routing: the operating point, the human share and where the final labels came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from duolabel.core.spans import parse_spans, span_scores
from duolabel.core.wholelist import chance_calibration_error
from duolabel.errors import ProjectError
from duolabel.formatting import fmt_figure
from duolabel.report_lists import reliability_rows, render_report
from duolabel.store import Item, Prediction

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["span_report_figures", "write_span_report"]

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>duolabel report: {{ name }}</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
</style></head><body>
<h1>{{ name }}: spans report</h1>
<p>Model version {{ version }}; {{ golden }} golden items (cross-fitted predictions);
generated {{ generated }}.</p>
<h2>Spans on the golden items</h2>
<p>Exact match: a span counts when its start, end and label all equal a gold span's.</p>
<table><tr><th>figure</th><th>value</th></tr>
{% for name, value in overall %}<tr><td>{{ name }}</td><td>{{ value }}</td></tr>{% endfor %}
</table>
<h2>Per label</h2>
<table><tr><th>label</th><th>gold spans</th><th>precision</th><th>recall</th><th>F1</th></tr>
{% for row in per_label %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Calibration of the item score</h2>
<p>The item score is the chance that the item's whole span list is right, as calibrated on the
golden items (routing reads it). Error: mean |chance - share right| over equal-mass bins.</p>
<table><tr><th>calibration error</th><td>{{ calibration }}</td></tr></table>
<h3>Reliability</h3>
<table><tr><th>bin</th><th>items</th><th>mean chance</th><th>share right</th></tr>
{% for row in reliability %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
"""


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (NaN where a denominator is 0)."""
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return p, r, f


def span_report_figures(project: Project, version: str) -> dict[str, Any]:
    """The report's figures on the golden items' cross-fitted predictions of ``version``."""
    labels = project.config.task.label_names
    with project.store.read() as session:
        rows = session.execute(
            select(Prediction.confidence, Prediction.label, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(Prediction.model_version == version, Prediction.out_of_fold.is_(True))
            .where(Prediction.calibrated.is_not(None), Item.role == "golden", Item.gold_label.is_not(None))
            .order_by(Item.seq)
        ).all()
    if not rows:
        raise ProjectError("no calibrated golden items to report on: run 'duolabel calibrate' first")
    given = [parse_spans(r.label) for r in rows]
    gold = [parse_spans(r.gold_label) for r in rows]
    total = np.sum([span_scores(a, g) for a, g in zip(given, gold, strict=True)], axis=0)
    per_label = []
    for label in labels:
        counts = np.sum(
            [
                span_scores([s for s in a if s[2] == label], [s for s in g if s[2] == label])
                for a, g in zip(given, gold, strict=True)
            ],
            axis=0,
        )
        support = sum(s[2] == label for g in gold for s in g)
        per_label.append((label, support, *(fmt_figure(v) for v in _prf(*map(int, counts)))))
    right = np.array([set(a) == set(g) for a, g in zip(given, gold, strict=True)], dtype=float)
    chance = np.array([r.confidence for r in rows], dtype=float)
    precision, recall, f1 = _prf(*map(int, total))
    return {
        "golden": len(rows),
        "overall": [
            ("span precision", fmt_figure(precision)),
            ("span recall", fmt_figure(recall)),
            ("span F1", fmt_figure(f1)),
            ("whole-item accuracy (list equals gold)", fmt_figure(float(right.mean()))),
            ("spans given / in gold", f"{int(total[0] + total[1])} / {int(total[0] + total[2])}"),
        ],
        "per_label": per_label,
        "calibration": fmt_figure(chance_calibration_error(chance, right)),
        "reliability": reliability_rows(chance, right),
    }


def write_span_report(project: Project, path: Path, version: str) -> Path:
    """Write a spans project's report for model ``version`` to ``path`` (one HTML file).

    Examples
    --------
    >>> write_span_report  # doctest: +ELLIPSIS
    <function write_span_report at ...>
    """
    return render_report(project, path, version, _TEMPLATE, span_report_figures(project, version))

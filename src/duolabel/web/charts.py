"""The admin item browser's charts, drawn on the server as inline SVG.

Each chart is plain geometry (bars and a polyline with their captions) that a Jinja macro
writes out as ``<svg>`` elements, escaping every caption: no script, no chart library, nothing
fetched when the page loads. Three charts: answers over time (cumulative, per day), answers
per annotator, and each annotator's accuracy on controls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from duolabel.context import Context
from duolabel.store import Annotation, Annotator, Item

__all__ = ["Bar", "Chart", "bar_chart", "charts", "line_chart"]

WIDTH, HEIGHT = 360, 170
_LEFT, _BOTTOM, _TOP, _RIGHT = 36, 34, 14, 10
_MAX_BARS = 20


@dataclass(frozen=True)
class Bar:
    """One bar: its box, its caption under it and the value written above it."""

    x: float
    y: float
    width: float
    height: float
    caption: str
    value: str


@dataclass
class Chart:
    """A chart's title and what to draw; ``empty`` when there is nothing to show yet."""

    title: str
    bars: list[Bar] = field(default_factory=list)
    points: str = ""  # a polyline's "x,y x,y ..."
    axis: dict[str, str] = field(default_factory=dict)  # captions: start, end, top
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return not self.bars and not self.points


def bar_chart(
    title: str, values: list[tuple[str, float]], *, top: float | None = None, fmt: str = "{:g}"
) -> Chart:
    """Bars for ``(caption, value)`` pairs (the first 20), scaled to ``top`` (default: the
    largest value).

    Examples
    --------
    >>> chart = bar_chart("answers", [("alice", 3), ("bob", 1)])
    >>> [(bar.caption, bar.value, round(bar.height)) for bar in chart.bars]
    [('alice', '3', 122), ('bob', '1', 41)]
    """
    values = values[:_MAX_BARS]
    chart = Chart(title)
    if not values:
        return chart
    scale = top if top is not None else max(value for _, value in values) or 1.0
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = inner_w / len(values)
    for i, (caption, value) in enumerate(values):
        height = inner_h * max(0.0, min(value / scale, 1.0))
        chart.bars.append(
            Bar(
                x=round(_LEFT + i * slot + slot * 0.15, 1),
                y=round(_TOP + inner_h - height, 1),
                width=round(slot * 0.7, 1),
                height=round(height, 1),
                caption=caption[:12],
                value=fmt.format(value),
            )
        )
    chart.axis = {"top": fmt.format(scale)}
    return chart


def line_chart(title: str, series: list[tuple[str, float]]) -> Chart:
    """A line through ``(caption, value)`` points in order, from zero to the largest value.

    Examples
    --------
    >>> line_chart("answers", [("2026-11-29", 2), ("2026-11-30", 5)]).points
    '36.0,87.2 350.0,14.0'
    """
    chart = Chart(title)
    if not series:
        return chart
    top = max(value for _, value in series) or 1.0
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    step = inner_w / max(1, len(series) - 1)
    chart.points = " ".join(
        f"{_LEFT + i * step:.1f},{_TOP + inner_h * (1 - value / top):.1f}"
        for i, (_, value) in enumerate(series)
    )
    chart.axis = {"start": series[0][0], "end": series[-1][0], "top": f"{top:g}"}
    return chart


def charts(ctx: Context) -> list[Chart]:
    """The three charts of the item browser, from the store as it is now."""
    day = func.date(Annotation.created_at)
    crowd = Annotation.kind.in_(("regular", "control", "expert"))
    with ctx.store.read() as session:
        per_day = session.execute(select(day, func.count()).where(crowd).group_by(day).order_by(day)).all()
        per_person = session.execute(
            select(Annotator.name, func.count())
            .join(Annotation, Annotation.annotator_id == Annotator.id)
            .where(crowd)
            .group_by(Annotator.name)
            .order_by(func.count().desc(), Annotator.name)
        ).all()
        right = case((Annotation.label == Item.gold_label, 1), else_=0)
        controls = session.execute(
            select(Annotator.name, func.sum(right), func.count())
            .join(Annotation, Annotation.annotator_id == Annotator.id)
            .join(Item, Item.id == Annotation.item_id)
            .where(Annotation.kind == "control")
            .group_by(Annotator.name)
            .order_by(Annotator.name)
        ).all()
    # From zero at the first day, so that even one day of answers draws a line.
    total, progress = 0, [(str(per_day[0][0])[:10], 0.0)] if per_day else []
    for when, count in per_day:
        total += int(count)
        progress.append((str(when)[:10], float(total)))
    return [
        line_chart("Answers over time (cumulative)", progress),
        bar_chart("Answers per annotator", [(name, float(n)) for name, n in per_person]),
        bar_chart(
            "Accuracy on controls",
            [(name, float(ok or 0) / int(n)) for name, ok, n in controls if n],
            top=1.0,
            fmt="{:.2f}",
        ),
    ]

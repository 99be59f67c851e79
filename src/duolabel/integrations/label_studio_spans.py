"""Label Studio's span results for a ``spans`` project: ``labels`` results in and out.

Label Studio marks spans with a ``<Labels>`` control; each region is a result::

    {"from_name": "label", "to_name": "text", "type": "labels",
     "value": {"start": 0, "end": 5, "text": "Alice", "labels": ["PER"]}}

A region with several labels is one span per label. An annotation with no ``labels`` result
(and not cancelled) marked nothing: its answer is ``[]``. Offsets are characters, as duolabel
counts them; :mod:`duolabel.integrations.label_studio` checks them against the item's text.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

from duolabel.config import TaskConfig
from duolabel.core.spans import parse_spans

__all__ = ["span_label_config", "span_results", "spans_of_results"]


def spans_of_results(result: Any, from_name: str | None) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The spans of a result list's ``labels`` results (of the control ``from_name``, or of the
    only one), as ``{"start", "end", "label"}``: (spans, None), or (None, the problem).

    Examples
    --------
    >>> region = {"type": "labels", "from_name": "label", "value": {"start": 0, "end": 5, "labels": ["PER"]}}
    >>> spans_of_results([region], None)
    ([{'start': 0, 'end': 5, 'label': 'PER'}], None)
    >>> spans_of_results([], None)
    ([], None)
    """
    if not isinstance(result, list):
        return None, f"got a JSON {type(result).__name__}, expected a list of results"
    found = [
        r
        for r in result
        if isinstance(r, dict) and r.get("type") == "labels" and from_name in (None, r.get("from_name"))
    ]
    if len({r.get("from_name") for r in found}) > 1:
        names = ", ".join(sorted(repr(r.get("from_name")) for r in found))
        return None, f"labels from several controls ({names}); pick one with from_name"
    spans: list[dict[str, Any]] = []
    for r in found:
        value = r.get("value")
        labels = value.get("labels") if isinstance(value, dict) else None
        if not isinstance(value, dict) or not isinstance(labels, list) or not labels:
            return None, f"got {value!r}, expected a region with start, end and a list of labels"
        spans.extend(
            {"start": value.get("start"), "end": value.get("end"), "label": label} for label in labels
        )
    return spans, None


def span_results(task: TaskConfig, answer: str, text: str, from_name: str) -> list[dict[str, Any]]:
    """A stored span answer as Label Studio ``labels`` results on the item's ``text``.

    Examples
    --------
    >>> from duolabel.config import parse_config
    >>> task = parse_config({"task": {"type": "spans", "labels": [{"name": "PER"}, {"name": "LOC"}]}}).task
    >>> span_results(task, '[{"start": 0, "end": 5, "label": "PER"}]', "Alice left", "label")[0]["value"]
    {'start': 0, 'end': 5, 'text': 'Alice', 'labels': ['PER']}
    """
    return [
        {
            "from_name": from_name,
            "to_name": task.text_fields[0],
            "type": "labels",
            "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]},
        }
        for start, end, label in parse_spans(answer)
    ]


def span_label_config(task: TaskConfig, from_name: str) -> str:
    """The Label Studio labeling config for a spans project: a ``<Labels>`` control on the text.

    Examples
    --------
    >>> from duolabel.config import parse_config
    >>> task = parse_config({"task": {"type": "spans", "labels": [{"name": "PER"}, {"name": "LOC"}]}}).task
    >>> print(span_label_config(task, "label"))
    <View>
      <Labels name="label" toName="text">
        <Label value="PER"/>
        <Label value="LOC"/>
      </Labels>
      <Text name="text" value="$text"/>
    </View>
    """
    text = task.text_fields[0]
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in task.label_names)
    return (
        f"<View>\n  <Labels name={quoteattr(from_name)} toName={quoteattr(text)}>\n{labels}\n  </Labels>\n"
        f"  <Text name={quoteattr(text)} value={quoteattr('$' + text)}/>\n</View>"
    )

"""The Label Studio labeling config of a pairwise project: the prompt, the two responses side by
side and a choice of ``A``, ``B`` (and ``tie``). Tasks and answers are the single-label ones:
the responses are in each task's ``data`` (``response_a``, ``response_b``) and an answer is a
``<Choices>`` result, so an export imports back as it was."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from duolabel.config import TaskConfig
from duolabel.core.pairwise import PAIR_FIELDS

__all__ = ["pair_label_config"]


def pair_label_config(task: TaskConfig, from_name: str) -> str:
    """The ``<View>`` for a pairwise project's tasks.

    Examples
    --------
    >>> from duolabel.config import parse_config
    >>> config = parse_config({"task": {"type": "pairwise", "labels": [{"name": "A"}, {"name": "B"}]}})
    >>> print(pair_label_config(config.task, "label"))
    <View>
      <Header value="Instruction"/>
      <Text name="text" value="$text"/>
      <View style="display: flex; gap: 1em">
        <View style="flex: 1"><Header value="Response A"/><Text name="response_a" value="$response_a"/></View>
        <View style="flex: 1"><Header value="Response B"/><Text name="response_b" value="$response_b"/></View>
      </View>
      <Choices name="label" toName="text" choice="single">
        <Choice value="A"/>
        <Choice value="B"/>
      </Choices>
    </View>
    """
    text = task.text_fields[0]
    sides = "\n".join(
        f'    <View style="flex: 1"><Header value="Response {side}"/>'
        f"<Text name={quoteattr(field)} value={quoteattr('$' + field)}/></View>"
        for side, field in zip("AB", PAIR_FIELDS, strict=True)
    )
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in task.label_names)
    return (
        '<View>\n  <Header value="Instruction"/>\n'
        f"  <Text name={quoteattr(text)} value={quoteattr('$' + text)}/>\n"
        f'  <View style="display: flex; gap: 1em">\n{sides}\n  </View>\n'
        f'  <Choices name={quoteattr(from_name)} toName={quoteattr(text)} choice="single">\n'
        f"{choices}\n  </Choices>\n</View>"
    )

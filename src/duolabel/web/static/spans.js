// The spans widget (task.type: spans): mark labelled spans in the item's text.
// Mouse: select words, then press a label's number (or click the label). Keyboard: left/right
// move over the words and punctuation marks, shift+left/right extend the selection, a number
// labels it. Click a marked span (or its row in the list) to pick it: a number relabels it,
// Delete or Backspace removes it, Escape lets go. Enter submits (label.js); the answer is the
// JSON list of {"start", "end", "label"} in the hidden field "label", with offsets counted in
// characters (code points) as the server counts them. Text is only ever set as text nodes.
(() => {
  "use strict";
  const box = document.getElementById("spans");
  const shown = document.getElementById("item-text");
  const answer = document.getElementById("span-answer");
  const list = document.getElementById("span-list");
  if (!box || !shown || !answer || !list) return;
  const text = shown.textContent;
  // JavaScript indexes strings in UTF-16 units, Python in code points: convert at the edges.
  const toPoint = new Array(text.length + 1);
  const toUnit = [];
  let points = 0;
  for (let unit = 0; unit < text.length; ) {
    const width = text.codePointAt(unit) > 0xffff ? 2 : 1;
    toUnit.push(unit);
    for (let k = 0; k < width; k++) toPoint[unit + k] = points;
    unit += width;
    points += 1;
  }
  toPoint[text.length] = points;
  toUnit.push(text.length);
  const tokens = [...text.matchAll(/[\p{L}\p{M}\p{N}_]+|[^\p{L}\p{M}\p{N}_\s]/gu)].map((m) => [m.index, m.index + m[0].length]);
  const keys = new Map([...box.querySelectorAll("button[data-span-label]")].map((b) => [b.dataset.spanKey, b.dataset.spanLabel]));
  let spans = [];  // {start, end, label}, offsets in UTF-16 units
  let selection = null;  // {start, end} waiting for a label
  let anchor = -1;  // token indices of the keyboard selection
  let cursor = -1;
  let active = -1;  // the picked span

  const save = () => {
    spans.sort((a, b) => a.start - b.start || a.end - b.end || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    answer.value = JSON.stringify(spans.map((s) => ({ start: toPoint[s.start], end: toPoint[s.end], label: s.label })));
  };

  const render = () => {
    const cuts = new Set([0, text.length]);
    for (const s of spans) cuts.add(s.start).add(s.end);
    if (selection) cuts.add(selection.start).add(selection.end);
    const bounds = [...cuts].sort((a, b) => a - b);
    const parts = [];
    for (let i = 0; i + 1 < bounds.length; i++) {
      const [a, b] = [bounds[i], bounds[i + 1]];
      const index = spans.findIndex((s) => s.start <= a && b <= s.end);
      const picked = selection && selection.start <= a && b <= selection.end;
      if (index < 0 && !picked) {
        parts.push(document.createTextNode(text.slice(a, b)));
        continue;
      }
      const mark = document.createElement("mark");
      mark.textContent = text.slice(a, b);
      if (picked) mark.classList.add("selecting");
      if (index >= 0) {
        const s = spans[index];
        mark.dataset.span = String(index);
        mark.dataset.label = s.label;
        mark.title = s.label;
        mark.classList.add("span");
        if (index === active) mark.classList.add("active");
        if (b === s.end) mark.classList.add("end");
      }
      parts.push(mark);
    }
    shown.replaceChildren(...parts);
    list.replaceChildren(
      ...spans.map((s, index) => {
        const row = document.createElement("li");
        row.dataset.span = String(index);
        if (index === active) row.classList.add("active");
        const what = document.createElement("span");
        what.textContent = `${text.slice(s.start, s.end)} — ${s.label}`;
        const remove = document.createElement("button");
        remove.type = "button";
        remove.dataset.remove = String(index);
        remove.textContent = "Delete";
        row.append(what, " ", remove);
        return row;
      }),
    );
    save();
  };

  const choose = (label) => {
    if (active >= 0) {
      spans[active].label = label;
    } else if (selection) {
      const { start, end } = selection;
      if (!spans.some((s) => s.start === start && s.end === end && s.label === label)) spans.push({ start, end, label });
      selection = null;
      anchor = -1;
    } else {
      return;
    }
    active = -1;
    render();
  };

  const remove = (index) => {
    spans.splice(index, 1);
    active = -1;
    render();
  };

  const pick = (index) => {
    active = index;
    selection = null;
    render();
  };

  // Words and marks the keyboard selection covers.
  const fromTokens = () => {
    const [a, b] = anchor <= cursor ? [anchor, cursor] : [cursor, anchor];
    selection = { start: tokens[a][0], end: tokens[b][1] };
    active = -1;
    render();
  };

  // Where a DOM position falls in the text, in UTF-16 units.
  const offset = (node, at) => {
    const range = document.createRange();
    range.selectNodeContents(shown);
    range.setEnd(node, at);
    return range.toString().length;
  };

  shown.addEventListener("mouseup", () => {
    const chosen = window.getSelection();
    if (!chosen || chosen.isCollapsed || chosen.rangeCount === 0) return;
    const range = chosen.getRangeAt(0);
    if (!shown.contains(range.startContainer) || !shown.contains(range.endContainer)) return;
    const [start, end] = [offset(range.startContainer, range.startOffset), offset(range.endContainer, range.endOffset)];
    // Whole words: from the first word the selection touches to the last.
    const touched = tokens.map((t, i) => [t, i]).filter(([t]) => t[1] > start && t[0] < end);
    chosen.removeAllRanges();
    if (!touched.length) return;
    anchor = touched[0][1];
    cursor = touched[touched.length - 1][1];
    fromTokens();
  });

  shown.addEventListener("click", (event) => {
    const mark = event.target instanceof Element ? event.target.closest("mark[data-span]") : null;
    const chosen = window.getSelection();
    if (mark && (!chosen || chosen.isCollapsed)) pick(Number(mark.dataset.span));
  });

  list.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    const button = target && target.closest("button[data-remove]");
    if (button) return remove(Number(button.dataset.remove));
    const row = target && target.closest("li[data-span]");
    if (row) pick(Number(row.dataset.span));
  });

  box.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-span-label]") : null;
    if (button) choose(button.dataset.spanLabel);
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target instanceof Element && event.target.closest("input, textarea, select")) return;
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      if (!tokens.length) return;
      event.preventDefault();
      const step = event.key === "ArrowRight" ? 1 : -1;
      cursor = cursor < 0 ? 0 : Math.min(tokens.length - 1, Math.max(0, cursor + step));
      if (!event.shiftKey || anchor < 0) anchor = cursor;
      fromTokens();
    } else if (keys.has(event.key)) {
      event.preventDefault();
      choose(keys.get(event.key));
    } else if ((event.key === "Delete" || event.key === "Backspace") && active >= 0) {
      event.preventDefault();
      remove(active);
    } else if (event.key === "Escape") {
      selection = null;
      anchor = -1;
      active = -1;
      render();
    }
  });
  render();
})();

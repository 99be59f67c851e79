// Keyboard-first labelling: 1..9 choose a label (multi_label: toggle its box, Enter submits;
// pairwise: a / b / t too),
// s skips, u undoes the last answer, ? opens the instructions. Also measures the time spent on the item.
(() => {
  "use strict";
  const form = document.getElementById("answer");
  const started = performance.now();
  let sent = false;
  const once = (event) => {
    if (sent) {  // one answer per page, however fast the keys are pressed
      event.preventDefault();
      return false;
    }
    sent = true;
    return true;
  };
  if (form) {
    form.addEventListener("submit", (event) => {
      if (once(event)) form.elements.seconds.value = ((performance.now() - started) / 1000).toFixed(2);
    });
  }
  for (const id of ["skip", "undo"]) {
    const other = document.getElementById(id);
    if (other) other.addEventListener("submit", once);
  }
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    // Typing in a field is typing; a focused checkbox (just clicked) still takes the shortcuts.
    if (event.target instanceof Element && event.target.closest("input:not([type=checkbox]), textarea, select")) return;
    if (event.key === "?") {
      const help = document.getElementById("instructions");
      if (help) {
        event.preventDefault();
        help.open = !help.open;
      }
      return;
    }
    const key = event.key.toLowerCase();
    const box = document.querySelector(`input[type="checkbox"][data-toggle="${key}"]`);
    if (box) {
      event.preventDefault();
      box.checked = !box.checked;
      return;
    }
    const submit = event.key === "Enter" ? document.querySelector("button[data-submit]") : null;
    if (submit && submit.form) {
      event.preventDefault();
      submit.form.requestSubmit(submit);
      return;
    }
    // data-key may list several keys ("a 1": the pairwise widget's letter and number).
    const button = document.querySelector(`button[data-key~="${CSS.escape(key)}"]`);
    if (!button || !button.form) return;
    event.preventDefault();
    button.form.requestSubmit(button);
  });
})();

// Keyboard shortcuts (1..9 choose a label) and the time spent on the item.
(() => {
  "use strict";
  const form = document.getElementById("answer");
  if (!form) return;
  const started = performance.now();
  let sent = false;
  form.addEventListener("submit", (event) => {
    if (sent) {  // one answer per page, however fast the keys are pressed
      event.preventDefault();
      return;
    }
    sent = true;
    form.elements.seconds.value = ((performance.now() - started) / 1000).toFixed(2);
  });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target instanceof Element && event.target.closest("input, textarea, select")) return;
    const button = form.querySelector(`button[data-key="${event.key}"]`);
    if (!button) return;
    event.preventDefault();
    form.requestSubmit(button);
  });
})();

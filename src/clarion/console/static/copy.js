// The "Draft with AI" panel: the model takes a while, so the brief's button is disabled while the drafts are
// written (a second click would pay for a second call), and the keep button is offered only once a draft is
// ticked. The page works the same without this script.
"use strict";

(function () {
  const brief = document.getElementById("brief");
  if (brief) {
    brief.addEventListener("submit", () => {
      const button = document.getElementById("draft");
      const busy = document.getElementById("busy");
      // disabled after the submit event has collected the form, so the post is unchanged
      setTimeout(() => {
        button.disabled = true;
      }, 0);
      if (busy) {
        busy.textContent = brief.dataset.busy;
      }
    });
  }

  const keep = document.getElementById("keep");
  if (keep) {
    const button = document.getElementById("keep-drafts");
    const boxes = keep.querySelectorAll("input[type=checkbox][name^='keep.']");
    const update = () => {
      button.disabled = !Array.from(boxes).some((box) => box.checked);
    };
    boxes.forEach((box) => box.addEventListener("change", update));
    update();
  }
})();

// The template editor's live preview: while the operator types, the form is posted (debounced) to the
// editor's preview route and the fragment it answers replaces the preview. Channels are added and removed in
// the page without reloading it, so nothing typed is lost; the test send takes the preview's sample data.
"use strict";

(function () {
  const editor = document.getElementById("editor");
  if (!editor) {
    return;
  }
  const preview = document.getElementById("preview");
  const DELAY_MS = 400;
  let timer = null;
  let asked = 0;

  async function refresh() {
    const ticket = ++asked;
    try {
      const response = await fetch(editor.dataset.preview, {
        method: "POST",
        body: new FormData(editor),
        credentials: "same-origin",
      });
      const html = await response.text();
      if (ticket === asked) {
        // only the answer to the latest edit is shown
        preview.innerHTML = html;
        preview.removeAttribute("data-stale");
      }
    } catch (failure) {
      // the server is unreachable: the last preview stays, marked as out of date
      preview.dataset.stale = "true";
    }
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(refresh, DELAY_MS);
  }

  function toggle(fieldset, on) {
    fieldset.hidden = !on;
    fieldset.disabled = !on;
    const option = document.querySelector(`#add-channel option[value="${fieldset.id.slice("channel-".length)}"]`);
    if (option) {
      option.hidden = on;
    }
    const select = document.getElementById("add-channel");
    const offered = select ? select.querySelector("option:not([hidden])") : null;
    if (offered) {
      select.value = offered.value;
    }
  }

  editor.addEventListener("input", later);
  editor.addEventListener("change", later);
  editor.addEventListener("click", (event) => {
    const button = event.target.closest(".remove-channel");
    if (button) {
      toggle(document.getElementById(`channel-${button.dataset.channel}`), false);
      later();
    }
  });

  const adding = document.getElementById("add-channel-form");
  if (adding) {
    adding.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = document.getElementById("add-channel").value;
      const fieldset = document.getElementById(`channel-${chosen}`);
      if (fieldset) {
        toggle(fieldset, true);
        const first = fieldset.querySelector("textarea, input:not([type=hidden])");
        if (first) {
          first.focus();
        }
        later();
      }
    });
  }

  const test = document.getElementById("test-send");
  if (test) {
    test.addEventListener("submit", () => {
      document.getElementById("test-data").value = document.getElementById("preview-data").value;
    });
  }

  refresh();
})();

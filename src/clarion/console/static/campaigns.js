// The audiences and campaigns pages' live parts: the segment builder's helper and its debounced live count, the
// ID-list upload with its progress, the estimate on request, and the run's progress polled while it is live.
// Each fetches a fragment the console renders and puts it in place; the pages work without it, less live.
"use strict";

(function () {
  const FRAGMENT = { "X-Clarion-Fragment": "1" };
  const POLL_MS = 1000;
  const DEBOUNCE_MS = 300;

  // The fragment at ``url``, or null when it could not be fetched (the page was left, the network dropped): the
  // caller keeps what it shows and, where it polls, tries again.
  async function fragment(url) {
    try {
      const answer = await fetch(url, { headers: FRAGMENT, credentials: "same-origin" });
      return await answer.text(); // a refusal is a fragment too, naming the problem
    } catch (ignored) {
      return null;
    }
  }

  // -- the segment builder --------------------------------------------------------------------------------

  function scalar(text) {
    try {
      const value = JSON.parse(text);
      if (typeof value === "number" || typeof value === "boolean" || typeof value === "string") return value;
    } catch (ignored) {
      // not JSON: the text itself
    }
    return text;
  }

  function values(text) {
    return text.split(",").map((part) => scalar(part.trim())).filter((v) => v !== "");
  }

  function node() {
    const kind = document.getElementById("node-kind").value;
    const name = document.getElementById("node-name").value.trim();
    if (!name) return null;
    if (kind === "tag") return { tag: name };
    if (kind === "list") return { list: name };
    if (kind === "event") {
      const found = { event: name, op: "at_least", count: Number(document.getElementById("node-count").value || 1) };
      const days = document.getElementById("node-days").value;
      if (days) found.within_days = Number(days);
      return found;
    }
    const op = document.getElementById("node-op").value;
    const raw = document.getElementById("node-value").value.trim();
    if (op === "exists") return { attr: name, op: op };
    if (op === "in" || op === "between") return { attr: name, op: op, value: values(raw) };
    return { attr: name, op: op, value: op === "contains" ? raw : scalar(raw) };
  }

  function combine(current, join, added) {
    if (join === "negate") return current === null ? null : { not: current };
    if (added === null) return current;
    const part = join === "not" ? { not: added } : added;
    if (current === null) return part;
    const op = join === "or" ? "or" : "and";
    if (current[op] && Array.isArray(current[op])) return { [op]: current[op].concat([part]) };
    return { [op]: [current, part] };
  }

  function setUpBuilder() {
    const text = document.getElementById("conditions");
    const preview = document.getElementById("preview");
    if (!text || !preview) return;
    let timer = null;
    let asked = 0;
    // aria-busy stays true from the change until the answer for the latest conditions is shown
    function settled() {
      preview.setAttribute("aria-busy", "false");
    }
    async function refresh() {
      if (!text.value.trim()) {
        preview.replaceChildren();
        settled();
        return;
      }
      try {
        JSON.parse(text.value);
      } catch (ignored) {
        const note = document.createElement("p");
        note.className = "muted";
        note.textContent = preview.dataset.invalid;
        preview.replaceChildren(note);
        settled();
        return;
      }
      const ticket = ++asked;
      const html = await fragment(preview.dataset.url + "?conditions=" + encodeURIComponent(text.value));
      if (ticket !== asked) return; // an older answer never overwrites a newer one
      if (html !== null) preview.innerHTML = html;
      settled();
    }
    function later() {
      preview.setAttribute("aria-busy", "true");
      clearTimeout(timer);
      timer = setTimeout(refresh, DEBOUNCE_MS);
    }
    text.addEventListener("input", later);
    document.querySelectorAll("#builder button[data-join]").forEach((button) => {
      button.addEventListener("click", () => {
        let current = null;
        if (text.value.trim()) {
          try {
            current = JSON.parse(text.value);
          } catch (ignored) {
            refresh(); // says the JSON is not valid yet
            return;
          }
        }
        const next = combine(current, button.dataset.join, node());
        text.value = next === null ? "" : JSON.stringify(next, null, 2);
        later();
      });
    });
    if (text.value.trim()) refresh();
  }

  // -- the ID-list upload ---------------------------------------------------------------------------------

  function setUpUpload() {
    const form = document.getElementById("list-upload");
    const report = document.getElementById("upload-report");
    const bar = document.getElementById("upload-progress");
    if (!form || !report || !bar) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("X-Clarion-Fragment", "1");
      bar.hidden = false;
      bar.value = 0;
      request.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
      });
      request.addEventListener("load", () => {
        bar.value = 100;
        report.innerHTML = request.responseText;
      });
      request.addEventListener("error", () => {
        report.textContent = form.dataset.failed;
      });
      request.send(new FormData(form));
    });
  }

  // -- a campaign: the estimate and the live progress -----------------------------------------------------

  function setUpEstimate() {
    const button = document.getElementById("estimate");
    const target = document.getElementById("estimate-result");
    if (!button || !target) return;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const html = await fragment(button.dataset.url);
        if (html !== null) target.innerHTML = html;
      } finally {
        button.disabled = false;
      }
    });
  }

  function setUpProgress() {
    const box = document.getElementById("progress");
    if (!box) return;
    const body = () => document.getElementById("progress-body");
    const wasLive = body() && body().dataset.live === "1";
    async function poll() {
      const html = await fragment(box.dataset.url);
      if (html === null) {
        setTimeout(poll, POLL_MS);
        return;
      }
      box.innerHTML = html;
      if (body() && body().dataset.live === "1") {
        setTimeout(poll, POLL_MS);
      } else if (wasLive) {
        window.location.reload(); // the run is over: show its results and the actions left
      }
    }
    if (wasLive) setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpBuilder();
    setUpUpload();
    setUpEstimate();
    setUpProgress();
  });
})();

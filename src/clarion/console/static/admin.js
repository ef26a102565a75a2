// The configuration pages' live parts: the keyword test answers in place, and a provider form shows the secret
// inputs of the kind chosen. Each fetches an HTML fragment from the console and swaps it in; without JavaScript
// the same forms work as plain page loads.
"use strict";

async function swap(url, selector) {
  const answer = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
  if (!answer.ok) return false;
  const holder = document.createElement("div");
  holder.innerHTML = await answer.text();
  const fresh = holder.querySelector(selector);
  const current = document.querySelector(selector);
  if (!fresh || !current) return false;
  current.replaceWith(fresh);
  return true;
}

const test = document.getElementById("keyword-test");
if (test) {
  test.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = new URLSearchParams(new FormData(test));
    if (!(await swap(`${test.dataset.fragment}?${query}`, "#keyword-result"))) test.submit();
  });
}

for (const kind of document.querySelectorAll("select[data-secrets]")) {
  kind.addEventListener("change", () => {
    const query = new URLSearchParams({ kind: kind.value, name: kind.dataset.name || "" });
    swap(`/console/provider-secrets?${query}`, kind.dataset.secrets);
  });
}

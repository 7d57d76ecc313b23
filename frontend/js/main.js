// Entry point: the router. The URL decides the view (see url.js); each view's render() returns a cleanup
// function (closes event streams, frees WebGL contexts) that runs before the next view is drawn.
import { api, token } from "./api.js";
import { el, errorBox, fill } from "./dom.js";
import { loadMetricNames } from "./metricnames.js";
import { navigate, params } from "./url.js";
import { renderCompare } from "./views/compare.js";
import { renderData } from "./views/data.js";
import { renderRun } from "./views/run.js";
import { renderRuns } from "./views/runs.js";
import { renderSweep, renderSweeps } from "./views/sweeps.js";
import { renderTrain } from "./views/train.js";

const root = document.getElementById("app");
let cleanup = () => {};

const TABS = { data: renderData, train: renderTrain, runs: renderRuns, sweeps: renderSweeps };

function route() {
  cleanup();
  cleanup = () => {};
  const p = params();
  const tab = p.get("run") || p.get("compare") || p.get("sweep") ? null : (p.get("tab") in TABS ? p.get("tab") : "data");
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.dataset.tab === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  fill(root);
  try {
    if (p.get("run")) cleanup = renderRun(root, p.get("run"));
    else if (p.get("compare")) cleanup = renderCompare(root, p.get("compare"));
    else if (p.get("sweep")) cleanup = renderSweep(root, p.get("sweep"));
    else cleanup = TABS[tab](root);
  } catch (err) {
    fill(root, errorBox(err, "This view failed to draw"));
    console.error(err);
  }
  cleanup = cleanup || (() => {});
}

// In-app links are real <a href> elements; a plain click navigates without reloading the page.
document.addEventListener("click", (ev) => {
  const link = ev.target.closest("a[data-nav]");
  if (!link || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  navigate(Object.fromEntries(new URL(link.href).searchParams));
  root.focus({ preventScroll: true });
  window.scrollTo(0, 0);
});
window.addEventListener("popstate", route);

async function showHealth() {
  const status = document.getElementById("server-status");
  try {
    const health = await api.health();
    const q = health.queue || {};
    const text = `${health.device} · ${q.running ?? 0} running, ${q.queued ?? 0} queued`;
    const shown = status.querySelector("#queue-text");
    if (shown && (!health.auth_required || status.querySelector("#api-token"))) { shown.textContent = text; return; }
    fill(status, el("span", { id: "queue-text" }, text));  // the token field is kept while the user types in it
    if (health.auth_required) status.append(" ", tokenField());
  } catch (err) {
    fill(status, el("span", { role: "alert" }, `server unreachable: ${err.detail || err.message}`));
  }
}

/** The server asks for a token on mutating requests: let the user paste it once (kept in localStorage). */
function tokenField() {
  const input = el("input", { type: "password", id: "api-token", value: token.get(), placeholder: "API token",
    onchange: () => token.set(input.value.trim()) });
  return el("label", { for: "api-token" }, "Token", input);
}

// Views label metrics from the server's list: load it first (a failure leaves keys as labels, not a blank page).
loadMetricNames().catch(() => {}).finally(route);
showHealth();
// The header's "N running, M queued" follows the queue: refreshed every few seconds while the tab is shown.
const HEALTH_MS = 3000;
setInterval(() => { if (!document.hidden) showHealth(); }, HEALTH_MS);
document.addEventListener("visibilitychange", () => { if (!document.hidden) showHealth(); });

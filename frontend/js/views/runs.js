// Runs tab: every run as a tree (a retrained run sits under its parent), live status while runs are active,
// and "pick two to compare".
import { api } from "../api.js";
import { el, empty, errorBox, fill, fixed, loading } from "../dom.js";
import { href, navigate } from "../url.js";
import { configLine, headline, statusBadge } from "../runinfo.js";
import { embeddingsPanel } from "./embeddingsform.js";
import { leaderboard } from "./leaderboard.js";
import { lossOverlay } from "./lossoverlay.js";

const POLL_MS = 2000;
const ACTIVE = new Set(["queued", "running"]);

export function renderRuns(root) {
  const picked = new Set();
  const compareButton = el("button", { type: "button", class: "primary", disabled: true,
    onclick: () => navigate({ compare: [...picked].join(",") }) }, "Compare the two selected");
  const list = el("div", {}, loading("runs"));
  const board = leaderboard(picked, (id, on) => onPick(id, on));
  const overlay = lossOverlay();
  let runsById = {};
  root.append(el("section", { class: "panel", "aria-labelledby": "runs-h" },
    el("header", {}, el("h2", { id: "runs-h" }, "Runs"),
      el("span", { class: "help" }, "Tick two runs to compare them side by side; tick any to overlay their loss curves."),
      el("div", { class: "actions" }, compareButton,
        el("a", { class: "button", href: href({ tab: "train" }), "data-nav": true }, "New run"))),
    list),
  embeddingsPanel(),
  el("section", { class: "panel", "aria-labelledby": "board-h" },
    el("header", {}, el("h2", { id: "board-h" }, "Leaderboard"),
      el("span", { class: "help" }, "click a column to sort; test = classes never seen in training")),
    board.node, overlay.node));

  let timer = null;
  const onPick = (id, on) => {
    if (on) picked.add(id); else picked.delete(id);
    compareButton.disabled = picked.size !== 2;
    overlay.update([...picked], runsById);
    for (const box of root.querySelectorAll(`input[type=checkbox][aria-label$="for comparison"]`)) {
      const row = box.closest("[data-run]");
      if (row?.dataset.run === id && box.checked !== on) box.checked = on; // the tree and the table agree
    }
  };
  async function refresh() {
    try {
      const [{ data: runs }, { data: sets }] = await Promise.all([api.runs(), api.datasets()]);
      const datasets = Object.fromEntries(sets.map((d) => [d.id, d.name]));
      runsById = Object.fromEntries(runs.map((r) => [r.id, r]));
      board.update(runs, datasets);
      fill(list, runs.length ? runTree(runs, datasets, picked, onPick)
        : empty("No runs yet.", el("a", { href: href({ tab: "train" }), "data-nav": true }, "Train the first one")));
      timer = runs.some((r) => ACTIVE.has(r.status)) ? setTimeout(refresh, POLL_MS) : null;
    } catch (err) {
      fill(list, errorBox(err, "Could not list the runs"));
    }
  }
  refresh();
  return () => { clearTimeout(timer); overlay.close(); };
}

/** Nested lists: roots first (newest first, as the server sends them), children under their parent. */
function runTree(runs, datasets, picked, onPick) {
  const ids = new Set(runs.map((r) => r.id));
  const children = {};
  for (const r of runs) if (r.parent_id && ids.has(r.parent_id)) (children[r.parent_id] ??= []).push(r);
  const item = (run) => el("li", { "data-run": run.id },
    el("div", { class: "line" },
      el("input", { type: "checkbox", id: `pick-${run.id}`, checked: picked.has(run.id), disabled: run.status !== "done",
        "aria-label": `select ${run.name || run.id} for comparison`, onchange: (ev) => onPick(run.id, ev.target.checked) }),
      run.parent_id ? el("span", { class: "child-mark", "aria-hidden": "true" }, "↳") : null,
      el("a", { href: href({ run: run.id }), "data-nav": true }, run.name || run.id),
      statusBadge(run),
      ACTIVE.has(run.status) && run.progress ? el("span", { class: "small" }, `${Math.round(100 * run.progress.fraction)} %`) : null,
      el("span", { class: "muted small" }, datasets[run.dataset_id] || run.dataset_id),
      el("span", { class: "small" }, configLine(run.config, run.origin)),
      headlineText(run)),
    children[run.id] ? el("ul", { "aria-label": `runs retrained from ${run.name || run.id}` }, children[run.id].map(item)) : null);
  return el("ul", { class: "run-list" }, runs.filter((r) => !r.parent_id || !ids.has(r.parent_id)).map(item));
}

function headlineText(run) {
  const h = headline(run);
  return h.length ? el("span", { class: "small mono" }, h.map(([k, v]) => `${k} ${fixed(v)}`).join(" · ")) : null;
}

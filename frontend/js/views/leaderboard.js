// The runs as a leaderboard: one row per run with its configuration and headline numbers (from its summary),
// sortable by any column (click a header; again to reverse), filtered by dataset and status. The sort lives
// in the URL (&sort=-map_at_r) so a ranking can be shared. "Group by config" (&group=config) shows instead one
// row per configuration across seeds (./rungroups.js).
import { el, fill, fixed } from "../dom.js";
import { metricDescription, metricLabel } from "../metricnames.js";
import { statusBadge } from "../runinfo.js";
import { href, params, setParams } from "../url.js";
import { drawGroups } from "./rungroups.js";

const test = (r) => r.summary?.test || {};
const train = (r) => r.summary?.train || {};
const regs = (r) => (r.config.regularizers || []).map((g) => `${g.name} ${g.weight}`).join(", ") || "—";

// [key, header, value(run), is number, title]; metric headers and titles from GET /api/metrics (main.js loads
// them before a view draws, so the list is built when the board is).
const metric = (key, split, value, title = metricDescription(key)) =>
  [`${split === "train" ? "train_" : ""}${key}`, `${metricLabel(key)} ${split}`, value, true, title];
const columns = () => [
  ["name", "run", (r) => r.name || r.id, false],
  ["dataset", "image set", (r, ds) => ds[r.dataset_id] || r.dataset_id, false],
  ["status", "status", (r) => r.status, false],
  ["loss", "loss", (r) => r.config.loss.name, false],
  ["distance", "distance", (r) => r.config.distance.name, false],
  ["regularizers", "regularizers", regs, false],
  ["flow", "flow", (r) => (r.config.flow.enabled ? `×${r.config.flow.depth}` : "—"), false],
  ["epochs", "epochs", (r) => r.config.epochs, true],
  metric("map_at_r", "test", (r) => test(r).map_at_r),
  metric("recall_at_1", "test", (r) => test(r).recall_at_1),
  metric("map_at_r", "train", (r) => train(r).map_at_r),
  ["gap", "train − test", (r) => (typeof train(r).map_at_r === "number" && typeof test(r).map_at_r === "number"
    ? train(r).map_at_r - test(r).map_at_r : undefined), true, "MAP@R on seen minus unseen classes: the generalisation gap"],
  metric("margin", "test", (r) => test(r).margin),
  metric("pi_ratio", "test", (r) => test(r).pi_ratio),
  metric("relative_density", "test", (r) => test(r).relative_density),
];

/** Returns {node, update(runs, datasets)}; `picked` (a Set) and `onPick(id, on)` are shared with the tree. */
export function leaderboard(picked, onPick) {
  const COLUMNS = columns();
  const p = params();
  let sort = p.get("sort") || "-map_at_r";
  let runs = [];
  let datasets = {};
  const dataset = el("select", { id: "board-dataset", onchange: () => draw() }, el("option", { value: "" }, "all"));
  const status = el("select", { id: "board-status", onchange: () => draw() },
    ["", "done", "running", "queued", "failed", "cancelled", "interrupted"].map((s) => el("option", { value: s }, s || "all")));
  const grouped = el("input", { type: "checkbox", id: "board-group", checked: p.get("group") === "config", onchange: () => {
    setParams({ group: grouped.checked ? "config" : null });
    draw();
  } });
  const table = el("div", { class: "table-scroll" });
  const node = el("div", {}, el("div", { class: "row" }, el("label", { for: "board-dataset" }, "Image set", dataset),
    el("label", { for: "board-status" }, "Status", status),
    el("label", { for: "board-group", class: "check", title: "one row per configuration: runs that differ only in seed, as mean ± std" },
      grouped, "group by config (across seeds)")), table);

  function draw() {
    status.disabled = grouped.checked;
    if (grouped.checked) {
      drawGroups(table, datasets, dataset.value);
      return;
    }
    const key = sort.replace(/^-/, "");
    const desc = sort.startsWith("-");
    const column = COLUMNS.find(([k]) => k === key) || COLUMNS[8];
    const value = (r) => column[2](r, datasets);
    const rows = runs.filter((r) => (!dataset.value || r.dataset_id === dataset.value) && (!status.value || r.status === status.value));
    const missing = (v) => v === undefined || v === null || Number.isNaN(v);
    rows.sort((a, b) => {
      const [x, y] = [value(a), value(b)];
      if (missing(x) || missing(y)) return missing(x) - missing(y); // runs without the number last
      const order = column[3] ? x - y : String(x).localeCompare(String(y));
      return desc ? -order : order;
    });
    fill(table, el("table", { id: "leaderboard" },
      el("thead", {}, el("tr", {}, el("th", {}, ""), COLUMNS.map(([k, label, , num, title]) => el("th", {
        class: num ? "num" : "", title: title || "", "aria-sort": k === key ? (desc ? "descending" : "ascending") : "none",
      }, el("button", { type: "button", class: "link", "data-sort": k, onclick: () => {
        sort = k === key && !desc ? `-${k}` : k === key ? k : (num ? `-${k}` : k);
        setParams({ sort });
        draw();
      } }, label, k === key ? (desc ? " ▼" : " ▲") : ""))))),
      el("tbody", {}, rows.map((r) => el("tr", { "data-run": r.id },
        el("td", {}, el("input", { type: "checkbox", checked: picked.has(r.id), disabled: r.status !== "done",
          "aria-label": `select ${r.name || r.id} for comparison`, onchange: (ev) => onPick(r.id, ev.target.checked) })),
        COLUMNS.map(([k, , get, num]) => {
          const v = get(r, datasets);
          if (k === "name") return el("td", { class: "clip", title: v }, el("a", { href: href({ run: r.id }), "data-nav": true }, v));
          if (k === "status") return el("td", {}, statusBadge(r));
          return el("td", { class: num ? "num" : "" }, num && k !== "epochs" ? fixed(v) : v ?? "—");
        }))))));
  }

  function update(newRuns, newDatasets) {
    runs = newRuns;
    datasets = newDatasets;
    const chosen = dataset.value;
    fill(dataset, el("option", { value: "" }, "all"), Object.entries(datasets).map(([id, name]) =>
      el("option", { value: id, selected: id === chosen }, name)));
    draw();
  }
  return { node, update };
}

// Per-class statistics as one table that holds at 11k classes: every class of both splits (stats.json joined
// with metrics.json's per-class retrieval scores), sorted by any column, searched by name, shown a page at a
// time. Clicking a class name highlights it on the map.
import { el, fill, fixed } from "../dom.js";
import { metricDescription, metricLabel } from "../metricnames.js";

export const PAGE_SIZE = 50;
// [key, header, tooltip]; numbers right-aligned. A null header is a headline metric: its label and description
// come from the server's list (metricnames.js), computed here over the class's own images.
const COLUMNS = [
  ["name", "class", null], ["split", "split", "train: seen classes; test: unseen classes"],
  ["count", "images", null],
  ["radius_mean", "radius", "mean distance to the class centre"], ["radius_p95", "p95 radius", null],
  ["relative_density", "rel. density", "nearest other centre ÷ spread (reconstruction, SPEC §2.2)"],
  ["margin", "margin", "gap − δ1: the class's smallest distance to another class minus its largest intra-class distance; < 0 violates eq. 1"],
  ["recall_at_1", null, null], ["map_at_r", null, null], ["nearest", "nearest class", "the class of the nearest image of another class"],
];
const TEXT = new Set(["name", "split", "nearest"]);

/** One record per class and split: stats.json's per-class values, the split, and metrics.json's per-class
 * recall_at_1 / map_at_r / r_precision (null where a class has one image); `nearest` names nearest_class. */
export function classRecords(statsAnswer) {
  const out = [];
  for (const split of ["train", "test"]) {
    const perClass = statsAnswer.stats?.[split]?.per_class || [];
    const scores = new Map((statsAnswer.metrics?.[split]?.per_class || []).map((m) => [m.label, m]));
    const names = new Map(perClass.map((r) => [r.label, r.name]));
    for (const r of perClass) {
      const m = scores.get(r.label) || {};
      out.push({ ...r, split, recall_at_1: m.recall_at_1 ?? null, map_at_r: m.map_at_r ?? null,
        r_precision: m.r_precision ?? null, nearest: names.get(r.nearest_class) ?? null });
    }
  }
  return out;
}

/** Compare two records by `key`: missing values last whatever the direction. */
function comparer(key, ascending) {
  const sign = ascending ? 1 : -1;
  return (p, q) => {
    const [a, b] = [p[key], q[key]];
    const missA = a === null || a === undefined;
    const missB = b === null || b === undefined;
    if (missA || missB) return missA - missB;
    if (TEXT.has(key)) return sign * String(a).localeCompare(String(b), undefined, { numeric: true });
    return sign * (a - b);
  };
}

/** The table's node; `records` from classRecords; `onPick(record)` when a class name is clicked. */
export function classTable(records, { onPick = null, id = "class-table" } = {}) {
  const hasRecall = records.some((r) => typeof r.recall_at_1 === "number");
  const state = { key: hasRecall ? "recall_at_1" : "radius_mean", ascending: hasRecall, query: "", split: "", page: 0 };
  const search = el("input", { type: "search", id: `${id}-search`, placeholder: "class name", autocomplete: "off",
    oninput: () => { state.query = search.value.trim().toLowerCase(); state.page = 0; render(); } });
  const split = el("select", { id: `${id}-split`, onchange: () => { state.split = split.value; state.page = 0; render(); } },
    el("option", { value: "" }, "both"), el("option", { value: "train" }, "train (seen)"), el("option", { value: "test" }, "test (unseen)"));
  const head = el("tr");
  const body = el("tbody");
  const pages = el("span", { id: `${id}-pages`, role: "status" });
  const prev = el("button", { type: "button", id: `${id}-prev`, onclick: () => { state.page -= 1; render(); } }, "‹ previous");
  const next = el("button", { type: "button", id: `${id}-next`, onclick: () => { state.page += 1; render(); } }, "next ›");

  function sortBy(key) {
    state.ascending = state.key === key ? !state.ascending : TEXT.has(key);
    state.key = key;
    state.page = 0;
    render();
  }

  function render() {
    const shown = records.filter((r) => (!state.split || r.split === state.split)
      && (!state.query || r.name.toLowerCase().includes(state.query)));
    shown.sort(comparer(state.key, state.ascending));
    const last = Math.max(0, Math.ceil(shown.length / PAGE_SIZE) - 1);
    state.page = Math.min(Math.max(0, state.page), last);
    const start = state.page * PAGE_SIZE;
    const heads = COLUMNS.map(([key, label, title]) => (label ? [key, label, title]
      : [key, metricLabel(key), `${metricDescription(key)} (over this class's images)`]));
    fill(head, heads.map(([key, label, title]) => el("th", {
      class: TEXT.has(key) ? null : "num", title, "aria-sort": state.key === key ? (state.ascending ? "ascending" : "descending") : "none",
    }, el("button", { type: "button", class: "link", "data-key": key, onclick: () => sortBy(key) },
      label, state.key === key ? (state.ascending ? " ▲" : " ▼") : ""))));
    fill(body, shown.slice(start, start + PAGE_SIZE).map((r) => el("tr", { "data-class": r.name, "data-split": r.split },
      COLUMNS.map(([key]) => {
        if (key === "name") {
          return el("td", { class: "clip", title: r.name }, onPick
            ? el("button", { type: "button", class: "link", title: `${r.name}: highlight on the map`, onclick: () => onPick(r) }, r.name) : r.name);
        }
        if (TEXT.has(key)) return el("td", { class: "clip", title: r[key] ?? "" }, r[key] ?? "—");
        return el("td", { class: "num" }, key === "count" ? String(r.count) : fixed(r[key]));
      }))));
    pages.textContent = shown.length
      ? `${start + 1}–${Math.min(start + PAGE_SIZE, shown.length)} of ${shown.length} classes${shown.length < records.length ? ` (${records.length} in all)` : ""}`
      : `no class matches (${records.length} in all)`;
    prev.disabled = state.page === 0;
    next.disabled = state.page >= last;
  }
  render();
  return el("div", { id },
    el("div", { class: "row" }, el("label", { for: search.id }, "Find class", search), el("label", { for: split.id }, "Split", split),
      el("span", { class: "actions" }, prev, pages, next)),
    el("div", { class: "table-scroll tall-table" }, el("table", {}, el("thead", {}, head), body)));
}

// Per-class geometry: radius (mean, p95, max distance to the class centre), density and margin, seen
// (train) classes next to unseen (test) ones — the determinant paper's r_i vs r* story — and, when comparing,
// the same quantities of two runs paired by class. A bar per class only up to BAR_CLASSES classes; every run
// gets the distributions, the best/worst classes and the sortable, searchable table, which hold at 11k classes.
import { el, empty, fill, fixed, shortName } from "../dom.js";
import { downloadPng, layout, purge, react } from "../plots.js";
import { distributionPanels } from "./classdist.js";
import { classRecords, classTable } from "./classtable.js";

const BAR_CLASSES = 40; // class rows (both splits) drawn as bars at most

const SPLIT_COLOR = { train: "#9c755f", test: "#4e79a7" };
const RUN_COLOR = { a: "#8da0cb", b: "#e5813e" };

/** Per-class rows of stats.json for both splits: [{name, split, radius_mean, …}] with a number for `key`, in
 * the order of `order` (row keys "name (split)") or else by `key`, largest first. */
function classRows(stats, key, order = null) {
  const rows = ["train", "test"].flatMap((split) =>
    (stats[split]?.per_class || []).map((row) => ({ ...row, split })));
  const rank = order && new Map(order.map((k, i) => [k, i]));
  return rows.filter((r) => typeof r[key] === "number")
    .sort(rank ? (p, q) => rank.get(rowKey(p)) - rank.get(rowKey(q)) : (p, q) => q[key] - p[key]);
}

const rowKey = (r) => `${r.name} (${r.split})`;

function chartPanel(id, title, badge, help, div, fileName) {
  return el("section", { class: "panel", "aria-labelledby": `${id}-h` },
    el("header", {}, el("h2", { id: `${id}-h` }, title), badge,
      el("div", { class: "actions" }, el("button", { type: "button", onclick: () => downloadPng(div, fileName) }, "Download PNG"))),
    help ? el("p", { class: "help" }, help) : null, div);
}

const approx = (why) => el("span", { class: "badge approx", title: why }, "approximation");

function barsBySplit(div, rows, key, yTitle, extra = {}) {
  const classes = rows.map(rowKey);
  const traces = ["train", "test"].map((split) => {
    const mine = rows.filter((r) => r.split === split);
    return {
      type: "bar", name: split === "train" ? "seen (train) classes" : "unseen (test) classes",
      x: mine.map(rowKey), y: mine.map((r) => r[key]), customdata: mine.map(rowKey),
      marker: { color: SPLIT_COLOR[split] }, hovertemplate: "%{customdata}: %{y:.3f}<extra></extra>",
    };
  });
  // Long class names are shortened on the axis; the hover names them whole.
  return react(div, [...traces, ...(extra.traces || [])], layout(null, {
    barmode: "overlay", xaxis: { categoryorder: "array", categoryarray: classes, tickangle: -45, automargin: true,
      tickvals: classes, ticktext: rows.map((r) => `${shortName(r.name)} (${r.split})`) },
    yaxis: { title: { text: yTitle }, zeroline: true, range: extra.yRange }, margin: { l: 56, r: 16, t: 28, b: 44 },
    legend: { orientation: "h", y: 1, yanchor: "bottom", x: 0 },
  }));
}

/** Draw the per-class panels of a run page into `box` (attached to the page: Plotly sizes a plot from its
 * container), from GET /api/runs/{id}/stats; `onPick(record)` when a class is picked in the table. */
export function classPanels(box, statsAnswer, run, cleanups, { onPick = null } = {}) {
  const records = classRecords(statsAnswer);
  if (!records.length) {
    fill(box, empty("This run has no per-class statistics."));
    return;
  }
  const dist = distributionPanels(records);
  cleanups.push(() => dist.plots.forEach(purge));
  const bars = el("div");
  fill(box, bars,
    el("section", { class: "panel", "aria-labelledby": "class-dist-h" },
      el("header", {}, el("h2", { id: "class-dist-h" }, `Per-class distributions (${records.length} class rows)`)),
      el("p", { class: "help" }, "Histograms over the classes of the seen (train) and unseen (test) splits, and the classes at both ends of one quantity."),
      dist.node),
    el("section", { class: "panel", "aria-labelledby": "class-table-h" },
      el("header", {}, el("h2", { id: "class-table-h" }, "Per-class statistics")),
      el("p", { class: "help" }, "Click a column to sort (again to reverse), type to find a class, click a class to highlight it on the map."),
      classTable(records, { onPick })));
  dist.draw();
  if (records.length <= BAR_CLASSES) classBars(bars, statsAnswer, run, cleanups);
}

/** The bar charts of radius and density per class (few classes only). */
function classBars(box, statsAnswer, run, cleanups) {
  const stats = statsAnswer.stats || {};
  const radiusDiv = el("div", { class: "plot", id: "radius-bars" });
  const densityDiv = el("div", { class: "plot", id: "density-bars" });
  cleanups.push(() => { purge(radiusDiv); purge(densityDiv); });
  const radius = classRows(stats, "radius_mean");

  // δ1 and δ2 are lines named in the legend (a label on the plot would cover bars); δ1, a maximum over pairs,
  // is often far above every radius: then the help says so and the bars keep their scale.
  const global = stats.test?.global || {};
  const top = 1.15 * radius.reduce((m, r) => Math.max(m, r.radius_mean, r.radius_p95 ?? 0), global.delta2 ?? 0);
  const keys = radius.map(rowKey);
  const lines = [];
  const offScale = [];
  for (const [key, label, dash] of [["delta1", "δ1 (test): largest intra-class distance", "dot"], ["delta2", "δ2 (test): smallest inter-class distance", "dash"]]) {
    const v = global[key];
    if (typeof v !== "number") continue;
    if (v <= top) {
      lines.push({ type: "scatter", mode: "lines", name: label, x: [keys[0], keys.at(-1)], y: [v, v], line: { dash, color: "#444", width: 1.5 },
        hovertemplate: `${label}: ${fixed(v)}<extra></extra>` });
    } else offScale.push(`${label} = ${fixed(v)} is above this scale`);
  }
  const margin = global.margin ?? (typeof global.delta2 === "number" && typeof global.delta1 === "number" ? global.delta2 - global.delta1 : null);
  const p95 = { type: "scatter", mode: "markers", name: "p95 radius", marker: { symbol: "line-ew-open", size: 14, color: "#222" },
    x: keys, y: radius.map((r) => r.radius_p95), hovertemplate: "p95 %{y:.3f}<extra></extra>" };
  const density = el("select", { id: "density-key" },
    el("option", { value: "relative_density" }, "relative density: nearest other centre ÷ spread"),
    el("option", { value: "density" }, "density: 1 ÷ spread"));
  const drawDensity = () => barsBySplit(densityDiv, classRows(stats, density.value, keys), density.value,
    density.value === "density" ? "density 1/s_c" : "relative density ρ̃_c");
  density.addEventListener("change", drawDensity);

  fill(box, el("div", { class: "grid-2" },
    chartPanel("radius", "Per-class radius", null,
      `Bars: mean distance to the class centre; ticks: 95th percentile. Unseen classes (r*) spreading wider than seen ones is the generalisation gap. Margin δ2 − δ1 = ${fixed(margin)} on the test images${margin !== null && margin < 0 ? ": negative, the discriminant criterion (eq. 1) is violated" : ""}.${offScale.length ? ` ${offScale.join("; ")}.` : ""} Both charts list the classes in the same order.`,
      radiusDiv, `dmlscope-${run.id}-radius`),
    chartPanel("density", "Per-class density", approx("the density paper's exact formula was not available: our reconstruction (SPEC §2.2)"),
      el("span", {}, el("label", { for: "density-key" }, "Show", density)), densityDiv, `dmlscope-${run.id}-density`)));
  barsBySplit(radiusDiv, radius, "radius_mean", "radius: mean distance to the class centre",
    { traces: [...(radius.some((r) => typeof r.radius_p95 === "number") ? [p95] : []), ...lines], yRange: [0, top] });
  drawDensity();
}

/** The mean distance between class centres of a run's test classes (π_inter): the unit of its own distances. */
const unitOf = (statsAnswer) => statsAnswer?.stats?.test?.global?.pi_inter;

/** Radius and density of two runs paired by class (GET /api/compare's `classes`), drawn into `box`. Both are
 * unit-free within each run — radius ÷ the run's mean distance between class centres, and the relative
 * density (nearest other centre ÷ spread) — because two runs may measure with different distances. */
export function pairedBars(box, cmp, cleanups) {
  const units = { a: unitOf(cmp.stats?.a), b: unitOf(cmp.stats?.b) };
  const value = (key) => (row, which) => (key === "radius_mean"
    ? (typeof row[which]?.radius_mean === "number" && units[which] > 0 ? row[which].radius_mean / units[which] : null)
    : row[which]?.relative_density);
  const charts = [
    ["radius_mean", "Radius by class ÷ mean distance between class centres", null, "radius ÷ π_inter"],
    ["relative_density", "Relative density by class", approx("reconstruction (SPEC §2.2)"), "nearest other centre ÷ spread"]];
  const [da, db] = [cmp.a.config.distance.name, cmp.b.config.distance.name];
  const common = [cmp.a, cmp.b].map((r) => r.summary?.test?.common);
  const note = el("div", { class: "grid-span" },
    el("p", { class: da === db ? "help" : "state warn", id: "units-note" },
      da === db ? `Both runs measure with the ${da} distance. ` : `A measures with ${da}, B with ${db}: their raw radii and densities are in different units and are not comparable. `,
      "The bars show the test (unseen) classes, unit-free within each run: the radius divided by that run's mean distance between its class centres, and the relative density."),
    common.every((c) => typeof c?.radius_mean === "number") ? el("p", { class: "help", id: "common-note" },
      `In one common space (L2-normalised embeddings, Euclidean): mean radius A ${fixed(common[0].radius_mean)}, B ${fixed(common[1].radius_mean)}`,
      typeof common[0].relative_density === "number" ? `; relative density A ${fixed(common[0].relative_density)}, B ${fixed(common[1].relative_density)}` : "", ".") : null);
  const draws = [];
  // One class order for both charts (A's radius, largest first), so a class reads across them.
  const order = new Map(cmp.classes.map((c) => [c.class, value("radius_mean")(c, "a")])
    .sort((p, q) => (q[1] ?? -Infinity) - (p[1] ?? -Infinity)).map(([name], i) => [name, i]));
  fill(box, note, charts.map(([key, title, badge, yTitle]) => {
    const get = value(key);
    const rows = cmp.classes.filter((c) => typeof get(c, "a") === "number" && typeof get(c, "b") === "number")
      .sort((p, q) => order.get(p.class) - order.get(q.class));
    if (!rows.length) return el("section", { class: "panel" }, el("h2", {}, title), empty("No classes in common."));
    const div = el("div", { class: "plot", id: `paired-${key}` });
    cleanups.push(() => purge(div));
    const trace = (which) => ({ type: "bar", name: which.toUpperCase(), x: rows.map((r) => shortName(r.class)),
      customdata: rows.map((r) => r.class), y: rows.map((r) => get(r, which)),
      marker: { color: RUN_COLOR[which] }, hovertemplate: `${which.toUpperCase()} %{customdata}: %{y:.3f}<extra></extra>` });
    draws.push(rows.length > BAR_CLASSES ? () => pairedScatter(div, rows, get, yTitle) : () => react(div, [trace("a"), trace("b")], layout(null, {
      barmode: "group", xaxis: { type: "category", title: { text: "class" }, automargin: true }, yaxis: { title: { text: yTitle } },
      margin: { l: 56, r: 16, t: 28, b: 44 }, legend: { orientation: "h", y: 1, yanchor: "bottom", x: 0 },
    })));
    return chartPanel(`paired-${key}`, title, badge, null, div, `dmlscope-compare-${key}`);
  }));
  draws.forEach((draw) => draw()); // once attached: Plotly sizes a plot from its container
}

/** Many classes: one point per class at (A's value, B's value) over the diagonal, instead of a bar pair each. */
function pairedScatter(div, rows, get, title) {
  const [xs, ys] = [rows.map((r) => get(r, "a")), rows.map((r) => get(r, "b"))];
  const lo = xs.concat(ys).reduce((m, v) => Math.min(m, v), Infinity);
  const hi = xs.concat(ys).reduce((m, v) => Math.max(m, v), -Infinity);
  return react(div, [
    { type: "scattergl", mode: "markers", x: xs, y: ys, customdata: rows.map((r) => r.class), name: "classes",
      marker: { size: 4, color: RUN_COLOR.b, opacity: 0.6 }, hovertemplate: "%{customdata}: A %{x:.3f}, B %{y:.3f}<extra></extra>" },
    { type: "scatter", mode: "lines", x: [lo, hi], y: [lo, hi], name: "A = B", line: { color: "#444", dash: "dot", width: 1 }, hoverinfo: "skip" },
  ], layout(null, {
    xaxis: { title: { text: `A: ${title}` } }, yaxis: { title: { text: `B: ${title}` } },
    margin: { l: 56, r: 16, t: 28, b: 44 }, legend: { orientation: "h", y: 1, yanchor: "bottom", x: 0 },
  }));
}

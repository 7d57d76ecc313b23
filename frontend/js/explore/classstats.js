// Per-class geometry: radius (mean, p95, max distance to the class centre), density and margin, seen
// (train) classes next to unseen (test) ones — the determinant paper's r_i vs r* story — and, when comparing,
// the same quantities of two runs paired by class.
import { el, empty, fill, fmt } from "../dom.js";
import { downloadPng, layout, purge, react } from "../plots.js";

const SPLIT_COLOR = { train: "#9c755f", test: "#4e79a7" };
const RUN_COLOR = { a: "#8da0cb", b: "#e5813e" };

/** Per-class rows of stats.json for both splits: [{name, split, radius_mean, …}], sorted by `key`. */
function classRows(stats, key) {
  const rows = ["train", "test"].flatMap((split) =>
    (stats[split]?.per_class || []).map((row) => ({ ...row, split })));
  return rows.filter((r) => typeof r[key] === "number").sort((p, q) => q[key] - p[key]);
}

function chartPanel(id, title, badge, help, div, fileName) {
  return el("section", { class: "panel", "aria-labelledby": `${id}-h` },
    el("header", {}, el("h2", { id: `${id}-h` }, title), badge,
      el("div", { class: "actions" }, el("button", { type: "button", onclick: () => downloadPng(div, fileName) }, "Download PNG"))),
    help ? el("p", { class: "help" }, help) : null, div);
}

const approx = (why) => el("span", { class: "badge approx", title: why }, "approximation");

function barsBySplit(div, rows, key, yTitle, extra = {}) {
  const classes = rows.map((r) => `${r.name} (${r.split})`);
  const traces = ["train", "test"].map((split) => ({
    type: "bar", name: split === "train" ? "seen (train) classes" : "unseen (test) classes",
    x: rows.map((r, i) => (r.split === split ? classes[i] : null)).filter((x) => x !== null),
    y: rows.filter((r) => r.split === split).map((r) => r[key]),
    marker: { color: SPLIT_COLOR[split] },
    hovertemplate: "%{x}: %{y:.3f}<extra></extra>",
  }));
  return react(div, [...traces, ...(extra.traces || [])], layout(null, {
    barmode: "overlay", xaxis: { categoryorder: "array", categoryarray: classes, tickangle: -45, automargin: true },
    yaxis: { title: { text: yTitle }, zeroline: true, range: extra.yRange }, margin: { l: 56, r: 16, t: 28, b: 44 },
    legend: { orientation: "h", y: 1, yanchor: "bottom", x: 0 },
    shapes: extra.shapes || [], annotations: extra.annotations || [],
  }));
}

/** Draw the per-class panels of a run page into `box` (attached to the page: Plotly sizes a plot from its
 * container), from GET /api/runs/{id}/stats. */
export function classPanels(box, statsAnswer, run, cleanups) {
  const stats = statsAnswer.stats || {};
  const radiusDiv = el("div", { class: "plot", id: "radius-bars" });
  const densityDiv = el("div", { class: "plot", id: "density-bars" });
  cleanups.push(() => { purge(radiusDiv); purge(densityDiv); });
  const radius = classRows(stats, "radius_mean");
  if (!radius.length) {
    fill(box, empty("This run has no per-class statistics."));
    return;
  }

  // δ1 (the largest intra-class distance) is a maximum over pairs and often far above every radius: a line
  // off the bars' scale becomes an arrow at the top edge, so the bars stay readable.
  const global = stats.test?.global || {};
  const top = 1.15 * Math.max(...radius.map((r) => Math.max(r.radius_mean, r.radius_p95 ?? 0)), global.delta2 ?? 0);
  const shapes = [];
  const annotations = [];
  for (const [key, label, dash] of [["delta1", "δ1 (test): largest intra-class distance", "dot"], ["delta2", "δ2 (test): smallest inter-class distance", "dash"]]) {
    const v = global[key];
    if (typeof v !== "number") continue;
    if (v <= top) {
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: v, y1: v, line: { dash, color: "#444", width: 1.5 } });
      annotations.push({ xref: "paper", x: 1, xanchor: "right", y: v, yanchor: "bottom", showarrow: false, text: label, font: { size: 11 } });
    } else {
      annotations.push({ xref: "paper", x: 1, xanchor: "right", y: top, yanchor: "top", showarrow: false, font: { size: 11 },
        text: `↑ ${label} = ${fmt(v)}, above this scale` });
    }
  }
  const margin = global.margin ?? (typeof global.delta2 === "number" && typeof global.delta1 === "number" ? global.delta2 - global.delta1 : null);
  const p95 = { type: "scatter", mode: "markers", name: "p95 radius", marker: { symbol: "line-ew-open", size: 14, color: "#222" },
    x: radius.map((r) => `${r.name} (${r.split})`), y: radius.map((r) => r.radius_p95), hovertemplate: "p95 %{y:.3f}<extra></extra>" };
  const density = el("select", { id: "density-key" },
    el("option", { value: "relative_density" }, "relative density: nearest other centre ÷ spread"),
    el("option", { value: "density" }, "density: 1 ÷ spread"));
  const drawDensity = () => barsBySplit(densityDiv, classRows(stats, density.value), density.value,
    density.value === "density" ? "density 1/s_c" : "relative density ρ̃_c");
  density.addEventListener("change", drawDensity);

  fill(box, el("div", { class: "grid-2" },
    chartPanel("radius", "Per-class radius", null,
      `Bars: mean distance to the class centre; ticks: 95th percentile. Unseen classes (r*) spreading wider than seen ones is the generalisation gap. Margin δ2 − δ1 = ${fmt(margin)} on the test images${margin !== null && margin < 0 ? ": negative, the discriminant criterion (eq. 1) is violated" : ""}.`,
      radiusDiv, `dmlscope-${run.id}-radius`),
    chartPanel("density", "Per-class density", approx("the density paper's exact formula was not available: our reconstruction (SPEC §2.2)"),
      el("span", {}, el("label", { for: "density-key" }, "Show", density)), densityDiv, `dmlscope-${run.id}-density`)));
  barsBySplit(radiusDiv, radius, "radius_mean", "radius: mean distance to the class centre",
    { traces: radius.some((r) => typeof r.radius_p95 === "number") ? [p95] : [], shapes, annotations, yRange: [0, top] });
  drawDensity();
}

/** Radius and density of two runs paired by class (GET /api/compare's `classes`), drawn into `box`. */
export function pairedBars(box, cmp, cleanups) {
  const charts = [["radius_mean", "Radius by class (mean)", null], ["density", "Density by class", approx("reconstruction (SPEC §2.2)")]];
  const draws = [];
  fill(box, charts.map(([key, title, badge]) => {
    const rows = cmp.classes.filter((c) => typeof c.a?.[key] === "number" && typeof c.b?.[key] === "number")
      .sort((p, q) => q.a[key] - p.a[key]);
    if (!rows.length) return el("section", { class: "panel" }, el("h2", {}, title), empty("No classes in common."));
    const div = el("div", { class: "plot", id: `paired-${key}` });
    cleanups.push(() => purge(div));
    const trace = (which) => ({ type: "bar", name: which.toUpperCase(), x: rows.map((r) => r.class), y: rows.map((r) => r[which][key]),
      marker: { color: RUN_COLOR[which] }, hovertemplate: `${which.toUpperCase()} %{x}: %{y:.3f}<extra></extra>` });
    draws.push(() => react(div, [trace("a"), trace("b")], layout(null, {
      barmode: "group", xaxis: { type: "category", title: { text: "class" } }, yaxis: { title: { text: key.replace("_", " ") } },
      margin: { l: 56, r: 16, t: 28, b: 44 }, legend: { orientation: "h", y: 1, yanchor: "bottom", x: 0 },
    })));
    return chartPanel(`paired-${key}`, title, badge, null, div, `dmlscope-compare-${key}`);
  }));
  draws.forEach((draw) => draw()); // once attached: Plotly sizes a plot from its container
}

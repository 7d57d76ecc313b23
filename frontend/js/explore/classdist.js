// Per-class values as distributions and extremes, which stay readable at any number of classes: a histogram
// per quantity (seen and unseen classes overlaid) and the best and worst k classes of one quantity.
import { el, fill, fixed, shortName } from "../dom.js";
import { layout, react } from "../plots.js";

const SPLIT_COLOR = { train: "#9c755f", test: "#4e79a7" };
const SPLIT_NAME = { train: "seen (train) classes", test: "unseen (test) classes" };
// [key, title, higher is better]
export const QUANTITIES = [
  ["radius_mean", "radius: mean distance to the class centre", false],
  ["relative_density", "relative density ρ̃_c", true],
  ["margin", "margin: gap − δ1", true],
  ["recall_at_1", "Recall@1 of the class", true],
];
export const EXTREMES_K = 15;

const numeric = (records, key) => records.filter((r) => typeof r[key] === "number" && Number.isFinite(r[key]));

/** Histogram of `key` over the classes, train and test overlaid, into `div` (attached: Plotly sizes it). */
export function histogram(div, records, key, title) {
  const traces = ["train", "test"].map((split) => {
    const values = numeric(records, key).filter((r) => r.split === split).map((r) => r[key]);
    return { type: "histogram", x: values, name: `${SPLIT_NAME[split]} (${values.length})`, opacity: 0.65, nbinsx: 40,
      marker: { color: SPLIT_COLOR[split] }, hovertemplate: `%{x}: %{y} classes<extra>${split}</extra>` };
  }).filter((t) => t.x.length);
  return react(div, traces, layout(null, {
    barmode: "overlay", xaxis: { title: { text: title } }, yaxis: { title: { text: "classes" } },
    margin: { l: 56, r: 16, t: 28, b: 44 }, legend: { orientation: "h", y: 1, yanchor: "bottom", x: 0 },
  }));
}

/** The `k` worst and `k` best classes by `key` (`higherBetter` says which end is good), worst first. */
export function extremes(records, key, higherBetter, k = EXTREMES_K) {
  const sorted = numeric(records, key).sort((p, q) => (higherBetter ? p[key] - q[key] : q[key] - p[key]));
  if (sorted.length <= 2 * k) return { worst: sorted, best: [] };
  return { worst: sorted.slice(0, k), best: sorted.slice(-k) };
}

/** Horizontal bars of the worst and best classes by `key` into `div`. */
export function extremesChart(div, records, key, title, higherBetter) {
  const { worst, best } = extremes(records, key, higherBetter);
  const label = (r) => `${shortName(r.name)} (${r.split})`;
  const bars = (rows, name, color) => ({ type: "bar", orientation: "h", name, y: rows.map(label), x: rows.map((r) => r[key]),
    customdata: rows.map((r) => `${r.name} (${r.split})`), marker: { color },
    hovertemplate: `%{customdata}: %{x:.3f}<extra>${name}</extra>` });
  const order = [...worst, ...best].map(label).reverse();  // worst at the top
  return react(div, [bars(worst, best.length ? `worst ${worst.length}` : "classes", "#e15759"),
    ...(best.length ? [bars(best, `best ${best.length}`, "#4e79a7")] : [])], layout(null, {
    xaxis: { title: { text: title } },
    yaxis: { type: "category", categoryorder: "array", categoryarray: order, automargin: true, tickfont: { size: 10 } },
    margin: { l: 56, r: 16, t: 28, b: 44 }, legend: { orientation: "h", y: 1, yanchor: "bottom", x: 0 }, bargap: 0.15,
  }));
}

/** The distributions panel's body: one histogram per quantity that has values, and the best/worst chart
 * with a select of the quantity. Returns {node, draw()} (call draw once attached). */
export function distributionPanels(records, idPrefix = "class") {
  const present = QUANTITIES.filter(([key]) => numeric(records, key).length);
  const hists = present.map(([key]) => el("div", { class: "plot short", id: `${idPrefix}-hist-${key}` }));
  const chooser = el("select", { id: `${idPrefix}-extremes-key` },
    present.map(([key, title]) => el("option", { value: key }, title)));
  const extremesDiv = el("div", { class: "plot tall", id: `${idPrefix}-extremes` });
  const drawExtremes = () => {
    const [key, title, higher] = present.find(([k]) => k === chooser.value);
    extremesChart(extremesDiv, records, key, title, higher);
  };
  chooser.addEventListener("change", drawExtremes);
  const node = el("div", {},
    el("div", { class: "grid-2" }, hists),
    el("div", { class: "row" }, el("label", { for: chooser.id }, `Best and worst ${EXTREMES_K} classes by`, chooser)),
    extremesDiv);
  return {
    node, plots: [...hists, extremesDiv],
    draw: () => {
      present.forEach(([key, title], i) => histogram(hists[i], records, key, title));
      if (present.length) drawExtremes();
      else fill(extremesDiv);
    },
  };
}

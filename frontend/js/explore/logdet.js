// The Jacobian-determinant map: log|det J| of the flow metric layer per image, over the same projection as
// the main map, and its distribution per class. A run without the flow layer has no log|det J|: say so.
import { el, empty, fill } from "../dom.js";
import { MapView, classColors, hasLogdet } from "./map.js";
import { downloadPng, layout, purge, react } from "../plots.js";

/** Returns {node, update(points)}; `update` redraws from the main map's points (same split and projection). */
export function logdetPanel(run, mainView, cleanups) {
  const mapDiv = el("div", { class: "plot", id: "logdet-map", role: "img", "aria-label": "log|det J| over the projection" });
  const violinDiv = el("div", { class: "plot", id: "logdet-classes", role: "img", "aria-label": "log|det J| per class" });
  const body = el("div");
  const view = new MapView(mapDiv, run, "log|det J| over the map");
  view.on("click", (id) => mainView.handlers.click.forEach((f) => f(id)));
  cleanups.push(() => { view.destroy(); purge(violinDiv); });

  const node = el("section", { class: "panel", "aria-labelledby": "logdet-h" },
    el("header", {}, el("h2", { id: "logdet-h" }, "Jacobian determinant of the flow layer"),
      el("span", { class: "badge approx", title: "the paper's exact regulariser form was not available (SPEC §3)" }, "approximation"),
      el("div", { class: "actions" },
        el("button", { type: "button", id: "logdet-map-png", onclick: () => downloadPng(mapDiv, `dmlscope-${run.id}-logdet-map`) }, "Download map PNG"),
        el("button", { type: "button", id: "logdet-classes-png", onclick: () => downloadPng(violinDiv, `dmlscope-${run.id}-logdet-per-class`) }, "Download per-class PNG"))),
    el("p", { class: "help" }, "log|det J| is the log volume change of the flow metric layer at each image, as a map ",
      "of the unit sphere to itself (normalised head output → normalised embedding; no scale can change it): ",
      "large values mean the layer stretches space there. It bounds the local Lipschitz constant only from below ",
      "(|det J| ≤ σ_max^(D−1)): a small determinant does not rule out stretch in one direction."),
    body);

  function update(points) {
    if (!hasLogdet(points)) {
      view.destroy();
      purge(violinDiv);
      fill(body, empty("Flow layer off: this run has no log|det J|.",
        el("p", {}, "Retrain with “Flow metric layer → Enabled” (and the det regularizer) to see the Jacobian-determinant map.")));
      return;
    }
    fill(body, el("div", { class: "grid-2" }, mapDiv, violinDiv));
    view.points = points;
    view.index = mainView.index;
    view.draw("logdet");
    drawViolins(violinDiv, points);
  }
  return { node, update };
}

/** One violin per class (box inside), classes ordered by their median log|det J|; past 40 classes only the 10
 * lowest and the 10 highest medians (thousands of violins are neither drawable nor readable). */
function drawViolins(div, points) {
  const { label, logdet } = points.columns;
  const byClass = new Map();
  label.forEach((l, i) => { if (!Number.isNaN(logdet[i])) (byClass.get(l) || byClass.set(l, []).get(l)).push(logdet[i]); });
  const median = (v) => { const s = [...v].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
  const medians = new Map([...byClass].map(([l, v]) => [l, median(v)]));
  const sorted = [...byClass.keys()].sort((a, b) => medians.get(a) - medians.get(b));
  const classes = sorted.length > 40 ? [...sorted.slice(0, 10), ...sorted.slice(-10)] : sorted;
  const { color } = classColors(points);
  const traces = classes.map((l) => ({
    type: "violin", y: byClass.get(l), name: points.class_names[l], box: { visible: true }, points: false,
    meanline: { visible: true }, line: { color: color.get(l), width: 1 }, fillcolor: color.get(l), opacity: 0.6,
    hoverinfo: "y+name", spanmode: "hard",
  }));
  const title = classes.length < sorted.length ? `log|det J| per class: the 10 lowest and 10 highest medians of ${sorted.length}` : "log|det J| per class";
  return react(div, traces, layout(title, {
    showlegend: false, yaxis: { title: { text: "log|det J|" }, zeroline: false }, xaxis: { title: { text: "class" } },
  }));
}

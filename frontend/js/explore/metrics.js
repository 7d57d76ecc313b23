// Retrieval and clustering metrics of a run, seen (train) classes next to unseen (test) ones: the gap
// between the two columns is the generalisation the regularizers are about.
import { el, empty, fmt } from "../dom.js";

export const METRIC_NAMES = {
  recall_at_1: "Recall@1", recall_at_2: "Recall@2", recall_at_4: "Recall@4", recall_at_8: "Recall@8",
  precision_at_1: "Precision@1", map_at_r: "MAP@R", r_precision: "R-Precision", nmi: "NMI",
};

/** Scalar metric names of a metrics.json split, the known ones first in their usual order. */
export function metricKeys(...splits) {
  const found = new Set(splits.flatMap((s) => Object.entries(s || {}).filter(([, v]) => typeof v === "number").map(([k]) => k)));
  return [...Object.keys(METRIC_NAMES).filter((k) => found.has(k)), ...[...found].filter((k) => !(k in METRIC_NAMES))];
}

/** The metrics table of GET /api/runs/{id}/stats. */
export function metricsPanel(stats) {
  const { train, test } = stats.metrics || {};
  const keys = metricKeys(train, test);
  return el("section", { class: "panel", "aria-labelledby": "metrics-h" },
    el("header", {}, el("h2", { id: "metrics-h" }, "Metrics"),
      el("span", { class: "help" }, "under the run's own distance; test = classes never seen in training")),
    keys.length ? el("table", { id: "metrics" },
      el("thead", {}, el("tr", {}, el("th", {}, "metric"), el("th", { class: "num" }, "test (unseen)"),
        el("th", { class: "num" }, "train (seen)"))),
      el("tbody", {}, keys.map((k) => el("tr", {}, el("td", {}, METRIC_NAMES[k] || k),
        el("td", { class: "num" }, fmt(test?.[k])), el("td", { class: "num" }, fmt(train?.[k]))))))
      : empty("This run has no metrics."));
}

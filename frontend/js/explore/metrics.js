// Retrieval and clustering metrics of a run, seen (train) classes next to unseen (test) ones: the gap
// between the two columns is the generalisation the regularizers are about.
import { el, empty, fixed } from "../dom.js";
import { metricKeys, metricLabel } from "../metricnames.js";

/** {key: label} of the metrics of one kind (GET /api/metrics) present in either split. */
function present(kind, ...splits) {
  return Object.fromEntries(metricKeys(kind).filter((k) => splits.some((s) => typeof s?.[k] === "number"))
    .map((k) => [k, metricLabel(k)]));
}

function splitTable(id, names, test, train) {
  const keys = Object.keys(names).filter((k) => typeof test?.[k] === "number" || typeof train?.[k] === "number");
  if (!keys.length) return null;
  return el("table", { id },
    el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "test (unseen)"), el("th", { class: "num" }, "train (seen)"))),
    el("tbody", {}, keys.map((k) => el("tr", {}, el("td", {}, names[k]),
      el("td", { class: `num ${k === "margin" && test?.[k] < 0 ? "worse" : ""}` }, fixed(test?.[k])),
      el("td", { class: `num ${k === "margin" && train?.[k] < 0 ? "worse" : ""}` }, fixed(train?.[k]))))));
}

/** In-Shop's own protocol (metrics.json test.query_gallery): each query searched in the gallery only. */
function queryGalleryTable(qg) {
  if (!qg) return null;
  const ks = Object.keys(qg).filter((k) => k.startsWith("recall_at_"));
  return el("div", {},
    el("table", { id: "query-gallery" },
      el("thead", {}, el("tr", {}, el("th", {}, "query → gallery"), ks.map((k) => el("th", { class: "num" }, `R@${k.slice(10)}`)))),
      el("tbody", {}, el("tr", {}, el("td", {}, "test (unseen)"), ks.map((k) => el("td", { class: "num" }, fixed(qg[k])))))),
    el("p", { class: "help" }, `${qg.queries} queries searched among ${qg.gallery} gallery images (the benchmark's published protocol)` +
      (qg.unanswerable ? `; ${qg.unanswerable} queries without a gallery image of their item left out` : "")));
}

/** The metrics and global geometry tables of GET /api/runs/{id}/stats. */
export function metricsPanel(answer) {
  const { train, test } = answer.metrics || {};
  const names = present("retrieval", train, test);
  const [testGlobal, trainGlobal] = [answer.stats?.test?.global, answer.stats?.train?.global];
  const geometry = splitTable("geometry", present("geometry", testGlobal, trainGlobal), testGlobal, trainGlobal);
  return el("section", { class: "panel", "aria-labelledby": "metrics-h" },
    el("header", {}, el("h2", { id: "metrics-h" }, "Metrics"),
      el("span", { class: "help" }, "under the run's own distance; test = classes never seen in training")),
    el("div", { class: "grid-2" },
      el("div", {}, splitTable("metrics", names, test, train) || empty("This run has no metrics."),
        queryGalleryTable(test?.query_gallery)),
      geometry ? el("div", {}, geometry,
        el("p", { class: "help" }, "A negative margin violates the discriminant criterion max d(same) < δ1 < δ2 < min d(other) (eq. 1).")) : null));
}

// A sweep's report (GET /api/sweeps/<id> → report, models/sweep_stats.py SweepReport.to_json): per metric the
// comparison table (mean ± std, paired Δ vs the baseline with its 95 % CI and p-value, the same against the
// variant's control, significance and under-trained counts), a chart of the paired differences for MAP@R and
// Recall@1, the selection (sensitivity) table, and the Markdown that `dmlscope sweep` prints.
import { el, empty, fill, fmt } from "../dom.js";
import { layout, purge, react } from "../plots.js";

const BASELINE = "baseline"; // the variant every other one is paired with; it has no difference of its own to draw
const CHART_METRICS = ["map_at_r", "recall_at_1"];
const COLORS = { map_at_r: "#4e79a7", recall_at_1: "#f28e2b" };

/** The results panel; `update(report)` redraws it (call it only when the report changed). */
export function reportPanel(cleanups) {
  const box = el("div", { id: "sweep-results" });
  const chart = el("div", { class: "plot", id: "sweep-chart", role: "img",
    "aria-label": "paired difference to the baseline with its 95 % confidence interval, per variant" });
  cleanups.push(() => purge(chart));
  let metric = "map_at_r";

  function update(report) {
    const rows = report?.variants || [];
    if (!rows.some((r) => r.n > 0)) {
      purge(chart);
      fill(box);
      return;
    }
    const metrics = Object.fromEntries(report.metrics.map((m) => [m.key, m]));
    const table = el("div");
    const note = el("p", { class: "help" });
    const show = () => {
      fill(table, comparisonTable(rows.filter((r) => r.metric === metric), report.metrics.find((m) => m.key === metric)));
      const m = metrics[metric];
      fill(note, el("strong", {}, m.label), ` (${m.space}, ${m.unit}): ${m.description}`);
    };
    const picker = el("select", { id: "sweep-metric", onchange: (ev) => { metric = ev.target.value; show(); } },
      report.metrics.map((m) => el("option", { value: m.key, selected: m.key === metric }, `${m.label} — ${m.space}`)));
    fill(box, el("section", { class: "panel", "aria-labelledby": "sweep-results-h" },
      el("header", {}, el("h2", { id: "sweep-results-h" }, "Results"),
        report.complete ? null : el("span", { class: "badge approx" }, `partial: ${report.finished} of ${report.total} runs`)),
      el("p", { class: "help" }, `Paired over ${report.header.splits} split(s) × ${report.header.seeds} seed(s), `,
        `${report.header.total_steps} optimizer steps per run: Δ = variant − baseline (or − its control) on the same `,
        "split and seed; 95 % CI from the t distribution, p from a two-sided paired t-test. ✔ = the CI excludes 0."),
      el("div", { class: "row" }, el("label", { for: "sweep-metric" }, "Metric"), picker), note, table,
      chart,
      report.selection.length ? selectionTable(report.selection) : null,
      el("details", {}, el("summary", {}, "The same report as ", el("code", {}, "dmlscope sweep"), " prints it (Markdown)"),
        el("pre", { class: "markdown", id: "sweep-markdown" }, report.markdown))));
    show();
    drawChart(chart, rows, metrics);
  }
  return { node: box, update };
}

function diffCell(mean, low, high, significant) {
  if (mean === null || mean === undefined) return "—";
  const interval = low === null || low === undefined ? " [n < 2]" : ` [${fmt(low)}, ${fmt(high)}]`;
  return el("span", { class: significant ? (mean > 0 ? "better" : "worse") : null }, fmt(mean), el("span", { class: "small" }, interval));
}

function comparisonTable(rows, metric) {
  const head = [["Variant"], ["n", "num"], [`${metric.label} mean ± std`, "num"], ["Δ vs baseline [95 % CI]", "num"],
    ["p", "num"], [""], ["Control"], ["Δ vs control [95 % CI]", "num"], ["p", "num"], ["Under-trained", "num"], ["Failed", "num"]];
  return el("div", { class: "table-scroll" }, el("table", { id: "sweep-table" },
    el("thead", {}, el("tr", {}, head.map(([h, cls]) => el("th", { class: cls || null }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", { "data-variant": r.variant, "data-metric": r.metric },
      el("td", { title: chosenText(r.chosen) }, el("strong", {}, r.variant)),
      el("td", { class: "num" }, r.n),
      el("td", { class: "num" }, r.mean === null ? "—" : `${fmt(r.mean)}${r.std === null ? "" : ` ± ${fmt(r.std)}`}`),
      el("td", { class: "num" }, diffCell(r.diff_mean, r.ci_low, r.ci_high, r.significant)),
      el("td", { class: "num" }, fmt(r.p_value)),
      el("td", {}, r.significant ? el("span", { class: "significant", title: "the 95 % CI excludes 0" }, "✔ significant") : null),
      el("td", {}, r.control || "—"),
      el("td", { class: "num" }, r.control ? diffCell(r.control_diff_mean, r.control_ci_low, r.control_ci_high, r.control_significant) : "—"),
      el("td", { class: "num" }, r.control ? fmt(r.control_p_value) : "—"),
      el("td", { class: "num" }, r.under_trained
        ? el("span", { class: "badge approx", title: "fewer steps than the minimum, or a loss that did not fall" },
          `⚠ ${r.under_trained} / ${r.finished - r.failed}`) : `0 / ${r.finished - r.failed}`),
      el("td", { class: "num" }, r.failed))))));
}

/** "split 0: {…}; split 1: {…}": the patch each split's final runs used (the chosen grid point). */
function chosenText(chosen) {
  if (!chosen) return null;
  return Object.entries(chosen).map(([split, patch]) => `split ${split}: ${patch === null ? "—" : JSON.stringify(patch)}`).join("; ");
}

function selectionTable(rows) {
  return el("div", {}, el("h3", { id: "sweep-selection-h" }, "Selection on the validation classes (sensitivity)"),
    el("p", { class: "help" }, "One run per grid point on a class-disjoint validation split of each split's training classes; the best validation MAP@R is chosen. The test classes are never used."),
    el("div", { class: "table-scroll" }, el("table", { id: "sweep-selection" },
      el("thead", {}, el("tr", {}, [["Variant"], ["Split", "num"], ["Grid point", "num"], ["Patch"], ["Validation MAP@R", "num"],
        ["Under-trained"], ["Chosen"]].map(([h, cls]) => el("th", { class: cls || null }, h)))),
      el("tbody", {}, rows.map((s) => el("tr", { class: s.chosen ? "selected" : null },
        el("td", {}, s.variant), el("td", { class: "num" }, s.split), el("td", { class: "num" }, s.grid_index),
        el("td", { class: "mono small" }, JSON.stringify(s.patch)),
        el("td", { class: "num" }, s.error ? el("span", { class: "worse", title: s.error }, "failed") : fmt(s.map_at_r)),
        el("td", {}, s.under_trained?.flag ? el("span", { class: "badge approx", title: s.under_trained.reasons.join("; ") }, "under-trained") : null),
        el("td", {}, s.chosen ? "✔" : null)))))));
}

/** One point per variant and metric (MAP@R, Recall@1): the mean paired Δ with its CI as error bars. */
function drawChart(div, rows, metrics) {
  const traces = CHART_METRICS.filter((key) => metrics[key]).map((key) => {
    const of = rows.filter((r) => r.metric === key && r.variant !== BASELINE && r.diff_mean !== null);
    const half = (r, side) => (r.ci_low === null ? 0 : side === "high" ? r.ci_high - r.diff_mean : r.diff_mean - r.ci_low);
    return { type: "scatter", mode: "markers", name: metrics[key].label, x: of.map((r) => r.variant),
      y: of.map((r) => r.diff_mean), customdata: of.map((r) => [r.ci_low, r.ci_high, r.p_value]),
      marker: { size: 11, color: COLORS[key], symbol: of.map((r) => (r.significant ? "diamond" : "circle")) },
      error_y: { type: "data", symmetric: false, array: of.map((r) => half(r, "high")),
        arrayminus: of.map((r) => half(r, "low")), thickness: 1.5, width: 6, color: COLORS[key] },
      hovertemplate: "%{x}: Δ %{y:.4f} [%{customdata[0]:.4f}, %{customdata[1]:.4f}], p %{customdata[2]:.3f}<extra>%{fullData.name}</extra>" };
  }).filter((t) => t.x.length);
  div.classList.toggle("plot", traces.length > 0); // no empty 420 px box around the message
  if (!traces.length) {
    purge(div);
    fill(div, empty("No paired difference to draw yet: a variant and the baseline need a finished run on the same split and seed."));
    return;
  }
  fill(div);
  react(div, traces, layout("Paired difference to the baseline, 95 % CI (◆ = the CI excludes 0)", {
    scattermode: "group", xaxis: { type: "category" },
    yaxis: { title: { text: "Δ = variant − baseline" }, zeroline: true, zerolinecolor: "#444", zerolinewidth: 1.5 },
    legend: { orientation: "h", y: -0.15 },
  }));
}

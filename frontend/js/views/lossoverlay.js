// Overlaid loss curves of the runs ticked in the leaderboard (or the run tree): one line per run, its total
// loss per epoch from GET /api/runs/{id}/history, so that runs of different lengths share the epoch axis.
import { api } from "../api.js";
import { el, errorBox, fill } from "../dom.js";
import { classColor, layout, purge, react } from "../plots.js";

const total = (h) => (typeof h.loss === "number" ? h.loss : Object.values(h.terms || {}).reduce((a, b) => a + b, 0));

/** Returns {node, update(ids, runsById), close}; an empty selection hides the chart. */
export function lossOverlay() {
  const chart = el("div", { class: "plot short", id: "loss-overlay" });
  const note = el("p", { class: "help" }, "Tick runs above to overlay their loss curves.");
  const errors = el("div");
  const histories = new Map(); // run id → history entries (a finished run's history does not change)
  let current = 0;

  async function update(ids, runsById) {
    const mine = ++current;
    if (!ids.length) {
      purge(chart);
      chart.hidden = true;
      note.hidden = false;
      fill(errors);
      return;
    }
    try {
      await Promise.all(ids.filter((id) => !histories.has(id)).map(async (id) => histories.set(id, (await api.history(id)).history)));
    } catch (err) {
      fill(errors, errorBox(err, "Could not read a run's loss history"));
      return;
    }
    if (mine !== current) return;
    fill(errors);
    note.hidden = true;
    chart.hidden = false;
    const traces = ids.map((id, i) => {
      const h = histories.get(id);
      return { type: "scatter", mode: h.length > 1 ? "lines+markers" : "markers", x: h.map((e) => e.epoch), y: h.map(total),
        name: runsById[id]?.name || id, line: { color: classColor(i), width: 2 } };
    });
    await react(chart, traces, layout("Loss per epoch of the ticked runs", {
      xaxis: { title: { text: "epoch" }, dtick: 1 }, yaxis: { title: { text: "loss (epoch mean)" } },
      showlegend: true, legend: { orientation: "h", y: -0.25 }, margin: { l: 56, r: 16, t: 36, b: 70 },
    }));
  }
  chart.hidden = true;
  return { node: el("div", {}, note, errors, chart), update, close: () => purge(chart) };
}

// Training progress: a bar with percentage and ETA, and the loss curves per term — live from the run's
// Server-Sent Events while it trains, from history.json (one point per epoch) once it is done.
import { api, followRun } from "../api.js";
import { duration, el, errorBox, fill } from "../dom.js";
import { layout, purge, react } from "../plots.js";

const REDRAW_MS = 300; // progress events can arrive many times a second; redraw the curves at most this often

/** Loss curves: one line per term (the loss and each weighted regulariser) against `x`. */
function drawCurves(div, x, termSeries, xTitle) {
  const traces = Object.entries(termSeries).map(([term, y]) => ({
    type: "scatter", mode: x.length > 1 ? "lines" : "markers", name: term, x, y,
  }));
  return react(div, traces, layout("Loss terms", {
    xaxis: { title: { text: xTitle } }, yaxis: { title: { text: "value (weighted)" } },
    legend: { orientation: "h", y: -0.25 }, margin: { l: 56, r: 16, t: 36, b: 70 },
  }));
}

/** Per-epoch curves from history.json entries ({epoch, terms: {name: value}}). */
export function historyCurves(div, history) {
  const terms = {};
  history.forEach((h, i) => {
    for (const [name, v] of Object.entries(h.terms)) (terms[name] ??= new Array(history.length).fill(null))[i] = v;
  });
  return drawCurves(div, history.map((h) => h.epoch), terms, "epoch");
}

function progressText(p) {
  const pct = `${Math.floor(100 * (p.fraction || 0))} %`;
  const where = p.stage === "train" && p.epochs
    ? `training: epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.steps}` : `${p.stage}${p.message ? `: ${p.message}` : ""}`;
  const speed = p.samples_per_s ? ` · ${Math.round(p.samples_per_s)} images/s` : "";
  return `${pct} · ${where} · ETA ${duration(p.eta_s)}${speed}`;
}

/**
 * A live panel for a queued or running run. `on.status(run)` follows status changes, `on.end(run)` is called
 * once with the terminal Run. Returns {node, close}.
 */
export function progressPanel(run, on) {
  const bar = el("progress", { max: 1, value: run.progress?.fraction || 0, "aria-labelledby": "progress-text" });
  const text = el("p", { id: "progress-text", "aria-live": "polite" }, run.status === "queued" ? "Queued: waiting for a worker…" : "Starting…");
  const curves = el("div", { class: "plot short", id: "loss-curves", hidden: true });
  const errors = el("div");
  const cancel = el("button", { type: "button", class: "danger", onclick: async () => {
    cancel.disabled = true;
    try { await api.cancel(run.id); text.textContent = "Cancelling after the current step…"; } catch (err) { fill(errors, errorBox(err, "Not cancelled")); cancel.disabled = false; }
  } }, "Cancel");

  const x = [];
  const series = {};
  let timer = null;
  const redraw = () => {
    timer = null;
    curves.hidden = false;
    drawCurves(curves, x, series, x[0] > 1 ? "step (since this page was opened)" : "step");
  };
  const onProgress = (p) => {
    bar.value = p.fraction || 0;
    text.textContent = progressText(p);
    if (p.stage !== "train" || !p.steps) return;
    const step = (p.epoch - 1) * p.steps + p.step;
    if (x.length && step <= x.at(-1)) return; // a replayed state
    x.push(step);
    for (const [term, v] of Object.entries(p.terms)) {
      (series[term] ??= new Array(x.length - 1).fill(null)).push(v);
    }
    for (const s of Object.values(series)) if (s.length < x.length) s.push(null);
    if (!timer) timer = setTimeout(redraw, REDRAW_MS);
  };
  const close = followRun(run.id, {
    run: (r) => {
      on.status(r);
      if (r.progress) onProgress(r.progress);
      else if (r.status === "running") text.textContent = "Running: preparing the data…";
    },
    progress: onProgress,
    end: (r) => { clearTimeout(timer); on.end(r); },
    error: () => fill(errors, errorBox({ error: "Lost the progress stream", detail: "reload the page to reconnect" })),
  });
  const node = el("section", { class: "panel", "aria-labelledby": "progress-h" },
    el("header", {}, el("h2", { id: "progress-h" }, "Training progress"), el("div", { class: "actions" }, cancel)),
    el("div", { class: "progress" }, bar, text), errors, curves);
  return { node, close: () => { close(); clearTimeout(timer); purge(curves); } };
}

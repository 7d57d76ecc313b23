// Training progress: a bar with percentage and ETA, and the loss curves per term — live from the run's
// Server-Sent Events while it trains, from history.json (one point per epoch) once it is done.
import { api, followRun } from "../api.js";
import { duration, el, errorBox, fill } from "../dom.js";
import { classColor, layout, purge, react } from "../plots.js";

const REDRAW_MS = 300; // progress events can arrive many times a second; redraw the curves at most this often

/** Per-term series {x, terms: {name: values}} from history.json entries ({epoch, terms: {name: value}}). */
function fromHistory(history) {
  const terms = {};
  history.forEach((h, i) => {
    for (const [name, v] of Object.entries(h.terms)) (terms[name] ??= new Array(history.length).fill(null))[i] = v;
  });
  return { x: history.map((h) => h.epoch), terms };
}

/** Loss curves against the epoch: each term's epoch means (the whole history) and, while training, its
 * per-step values (x = completed epochs + step/steps), one colour per term. */
function drawCurves(div, epochMeans, steps, epochs) {
  const names = [...new Set([...Object.keys(epochMeans.terms), ...Object.keys(steps.terms)])];
  const traces = (series, means) => Object.entries(series.terms).map(([term, y]) => ({
    type: "scatter", mode: means ? (series.x.length > 1 ? "lines+markers" : "markers") : "lines", x: series.x, y,
    name: means ? `${term} (epoch mean)` : `${term} (per step)`, legendgroup: term,
    line: { color: classColor(names.indexOf(term)), width: means ? 2.5 : 1 }, opacity: means ? 1 : 0.55, cliponaxis: false,
  }));
  const last = Math.max(epochs || 0, ...epochMeans.x, ...steps.x.map(Math.ceil), 1);
  return react(div, [...traces(epochMeans, true), ...traces(steps, false)], layout("Loss terms", {
    xaxis: { title: { text: "epoch" }, range: [0, last], tick0: 0, dtick: Math.max(1, Math.ceil(last / 10)) },
    yaxis: { title: { text: "value (weighted)" } },
    legend: { orientation: "h", y: -0.25 }, margin: { l: 56, r: 16, t: 36, b: 70 },
  }));
}

/** Per-epoch curves of a finished (or stopped) run from its history.json entries. */
export function historyCurves(div, history, epochs = history.length) {
  return drawCurves(div, fromHistory(history), { x: [], terms: {} }, epochs);
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

  // The whole history first (epochs completed before this page opened), then each step as it arrives.
  let past = { x: [], terms: {} };
  let epochs = run.config?.epochs;
  const live = { x: [], terms: {} };
  let timer = null;
  const redraw = () => {
    timer = null;
    curves.hidden = false;
    drawCurves(curves, past, live, epochs);
  };
  const schedule = () => { if (!timer) timer = setTimeout(redraw, REDRAW_MS); };
  api.history(run.id).then((h) => {
    past = fromHistory(h.history);
    epochs = h.epochs;
    if (past.x.length) schedule();
  }).catch(() => {}); // the live steps still draw; the header shows the run's state
  const onProgress = (p) => {
    bar.value = p.fraction || 0;
    text.textContent = progressText(p);
    if (p.stage !== "train" || !p.steps) return;
    const at = p.epoch - 1 + p.step / p.steps;
    if (live.x.length && at <= live.x.at(-1)) return; // a replayed state
    live.x.push(at);
    for (const [term, v] of Object.entries(p.terms)) {
      (live.terms[term] ??= new Array(live.x.length - 1).fill(null)).push(v);
    }
    for (const s of Object.values(live.terms)) if (s.length < live.x.length) s.push(null);
    schedule();
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

// The page of one run (/?run=<id>): what it is and where it came from, live progress while it trains, and
// once done the exploration: map, neighbours, per-class radius/density, Jacobian-determinant map, metrics.
import { api, exportUrl } from "../api.js";
import { configForm, describeChanges } from "../configform.js";
import { el, errorBox, fill, loading } from "../dom.js";
import { classPanels } from "../explore/classstats.js";
import { failurePanel } from "../explore/failures.js";
import { classLegend } from "../explore/legend.js";
import { logdetPanel } from "../explore/logdet.js";
import { MapView, classColors, hasLogdet, mapColumns, mapControls, mapParams, sampleNotice } from "../explore/map.js";
import { metricsPanel } from "../explore/metrics.js";
import { pairsPanel } from "../explore/pairs.js";
import { historyCurves, progressPanel } from "../explore/progress.js";
import { retrievalPanel } from "../explore/retrieval.js";
import { selectionPanel } from "../explore/selection.js";
import { downloadPng, purge } from "../plots.js";
import { configLine, runLabel, statusBadge, underTrainedNote } from "../runinfo.js";
import { href, navigate, params, setParams } from "../url.js";

const ACTIVE = new Set(["queued", "running"]);
const FIRST_PICTURE_MS = 400; // a map not answered by then is being computed: draw the PCA map meanwhile
const pause = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
const nextFrame = () => new Promise((resolve) => { requestAnimationFrame(() => setTimeout(resolve)); });

export function renderRun(root, runId) {
  const cleanups = [];
  root.append(loading("the run"));
  api.run(runId).then(async (run) => {
    if (run.origin === "embeddings") await markNoImages(run, cleanups);
    fill(root);
    draw(root, run, cleanups);
  }).catch((err) => fill(root, errorBox(err, `Run ${runId}`), el("a", { href: href({ tab: "runs" }), "data-nav": true }, "All runs")));
  return () => cleanups.splice(0).forEach((f) => f());
}

function draw(root, run, cleanups) {
  const header = headerPanel(run);
  root.append(header);
  if (ACTIVE.has(run.status)) {
    const live = progressPanel(run, {
      status: (r) => header.querySelector("[data-status]").replaceWith(statusBadge(r)),
      end: (finished) => {
        live.close();
        fill(root);
        draw(root, finished, cleanups);
      },
    });
    cleanups.push(live.close);
    root.append(live.node);
    return;
  }
  if (run.status !== "done") {
    root.append(errorBox({ error: `This run is ${run.status}`, detail: run.error || "resume it to continue from its last saved epoch" }),
      keptPanel(run, cleanups), retrainPanel(run));
    return;
  }
  if (run.origin === "embeddings") imagesNote(root);  // nothing to retrain: no network, no training
  else root.append(retrainPanel(run));
  explore(root, run, cleanups);
}

/** What a stopped (cancelled, failed, interrupted) run kept: the last saved epoch's checkpoint and the
 * loss curves up to it (GET /api/runs/{id}/history). */
function keptPanel(run, cleanups) {
  const text = el("div", { id: "kept-text" }, loading("what was kept"));
  const curves = el("div", { class: "plot short", id: "history-curves" });
  cleanups.push(() => purge(curves));
  api.history(run.id).then((h) => {
    if (h.checkpoint_epoch === null) {
      fill(text, `No epoch finished before the run stopped: nothing was kept, and Resume starts from the beginning.`);
      return;
    }
    fill(text, el("strong", {}, `Kept: the checkpoint of epoch ${h.checkpoint_epoch} of ${h.epochs}`),
      ` and the loss curves up to it. Resume continues from epoch ${h.checkpoint_epoch + 1}.`);
    historyCurves(curves, h.history, h.epochs);
  }).catch((err) => fill(text, errorBox(err, "Could not read what was kept")));
  return el("section", { class: "panel", id: "kept", "aria-labelledby": "kept-h" },
    el("header", {}, el("h2", { id: "kept-h" }, "What was kept")), text, curves);
}

function headerPanel(run) {
  const lineage = el("div");
  const errors = el("div");
  const action = (label, call, cls = "") => el("button", { type: "button", class: cls, onclick: async () => {
    try { await call(); } catch (err) { fill(errors, errorBox(err, `${label} failed`)); }
  } }, label);
  const actions = el("div", { class: "actions" },
    ["interrupted", "cancelled", "failed"].includes(run.status)
      ? action("Resume", async () => { await api.resume(run.id); navigate({ run: run.id }); }) : null,
    ACTIVE.has(run.status) ? null : action("Delete", async () => {
      if (!window.confirm(`Delete run “${runLabel(run)}” and its files?`)) return;
      await api.deleteRun(run.id);
      navigate({ tab: "runs" });
    }, "danger"));
  describeLineage(lineage, run);
  return el("section", { class: "panel", "aria-labelledby": "run-h" },
    el("header", {}, el("h2", { id: "run-h" }, runLabel(run)), statusBadge(run), actions),
    el("p", { class: "small" }, configLine(run.config, run.origin),
      run.processes > 1 ? ` · ${run.processes} processes (torchrun)` : null,
      el("span", { class: "muted mono" }, `  · id ${run.id}`)),
    underTrainedNote(run),
    lineage,
    saturationWarning(run.summary),
    run.status === "done" ? el("p", { class: "small" }, "Export: ",
      el("a", { href: exportUrl(run.id, "stats", "csv"), download: true }, "per-class stats (CSV)"), " · ",
      el("a", { href: exportUrl(run.id, "stats", "json"), download: true }, "metrics + stats (JSON)"), " · ",
      el("a", { href: exportUrl(run.id, "embeddings"), download: true }, "embeddings (.npz of .npy arrays)"),
      run.origin === "embeddings" ? null : [" · ", el("a", { href: exportUrl(run.id, "checkpoint"), download: true },
        "checkpoint (.pt)")]) : null,
    errors);
}

/** Imported embeddings linked to no dataset of images: mark the page (body.no-images) before anything is
 * drawn, so no thumbnail is requested (dom.js `el`, hovercard.js) and the layout leaves them out. */
async function markNoImages(run, cleanups) {
  try {
    if ((await api.dataset(run.dataset_id)).has_images !== false) return;
  } catch { return; }
  document.body.classList.add("no-images");
  cleanups.push(() => document.body.classList.remove("no-images"));
}

/** What imported embeddings offer: every view of the vectors, none of a network's or (unlinked) the images'. */
function imagesNote(root) {
  root.append(el("p", { class: "state", role: "note", id: "embeddings-note" },
    "Imported embeddings: measured without a model, so image queries, log|det J| and Lipschitz maps do not apply.",
    document.body.classList.contains("no-images") ? " No dataset of images is linked, so there are no thumbnails: "
      + "points and neighbours are shown by class and id." : null));
}

/** A warning when over half of the flow's coupling scales sit at their tanh bound (docs/determinant.md). */
function saturationWarning(summary) {
  const worst = Math.max(...["train", "test"].map((s) => summary?.[s]?.flow_saturation ?? 0));
  return worst > 0.5 ? el("p", { class: "state error", role: "note" }, `Degenerate flow: ${Math.round(100 * worst)} % of its `
    + "coupling scales sit at their tanh bound, so the flow is an input-independent map (flow_saturation).") : null;
}

/** "Retrained from <parent>: flow.enabled: false → true" and the runs retrained from this one. */
async function describeLineage(box, run) {
  try {
    const [parent, diff, { data: siblings }] = await Promise.all([
      run.parent_id ? api.run(run.parent_id) : null, run.parent_id ? api.runConfigDiff(run.parent_id, run.id) : null,
      api.runs({ dataset_id: run.dataset_id })]);
    const children = siblings.filter((r) => r.parent_id === run.id);
    fill(box,
      parent ? el("p", {}, "Retrained from ", el("a", { href: href({ run: parent.id }), "data-nav": true }, runLabel(parent)),
        ": ", describeChanges(diff.changes).join("; ") || "same settings", " — ",
        el("a", { href: href({ compare: `${parent.id},${run.id}` }), "data-nav": true }, "compare with parent")) : null,
      children.length ? el("p", {}, "Retrained as: ", children.flatMap((c, i) => [i ? ", " : "",
        el("a", { href: href({ run: c.id }), "data-nav": true }, runLabel(c)), " ", statusBadge(c)])) : null);
  } catch (err) {
    fill(box, errorBox(err, "Could not load the related runs"));
  }
}

/** "Change settings and retrain": the run's own config in the form; the patch is what the user changed. */
function retrainPanel(run) {
  const body = el("div", {}, loading("the form"));
  const details = el("details", { class: "panel", id: "retrain" },
    el("summary", {}, el("strong", {}, "Change settings and retrain"),
      el("span", { class: "help" }, " — a new run, linked to this one, with your changes merged into its config")), body);
  details.addEventListener("toggle", async () => {
    if (!details.open || body.dataset.ready) return;
    body.dataset.ready = "1";
    try {
      const components = await api.components();
      const form = configForm(components, run.config, "retrain");
      const name = el("input", { id: "retrain-name", type: "text", placeholder: "(optional)" });
      const summary = el("p", { class: "small", "aria-live": "polite" });
      const status = el("div");
      const submit = el("button", { type: "submit", class: "primary" }, "Retrain with these changes");
      let asked = 0; // only the latest answer is shown: an earlier keystroke's may arrive after it
      const update = async () => {
        const mine = ++asked;
        let text;
        try {
          const changes = describeChanges((await api.configDiff(run.config, form.read())).changes);
          text = changes.length ? `Changes: ${changes.join("; ")}` : "No changes yet.";
        } catch (err) {
          text = err.status === 422 ? `Not a valid config yet: ${err.detail}` : `Changes unknown: ${err.detail}`;
        }
        if (mine === asked) fill(summary, text);
      };
      fill(body, el("form", { onchange: update, oninput: update, onsubmit: async (ev) => {
        ev.preventDefault();
        submit.disabled = true;
        try {
          const { patch } = await api.configDiff(run.config, form.read());
          if (!Object.keys(patch).length) {
            submit.disabled = false;
            fill(status, errorBox({ error: "Nothing changed", detail: "change at least one setting" }));
            return;
          }
          const child = await api.retrain(run.id, patch, name.value.trim() || undefined);
          navigate({ run: child.id });
        } catch (err) {
          submit.disabled = false;
          form.markErrors(err.fields);
          fill(status, errorBox(err, "Not retrained"));
        }
      } }, form.node,
      el("div", { class: "row" }, el("label", { for: "retrain-name" }, "New run name", name), submit), summary, status));
      update();
    } catch (err) {
      fill(body, errorBox(err, "Could not load the components"));
    }
  });
  return details;
}

function explore(root, run, cleanups) {
  const p = params();
  const state = { proj: p.get("proj") || "umap", split: p.get("split") || "test", color: p.get("color") || "class",
    nn: p.get("nn"), md: p.get("md"), dim: p.get("dim") };
  const mapDiv = el("div", { class: "plot tall", id: "map", role: "img", "aria-label": "projection map of the embeddings" });
  const mapStatus = el("div", { role: "status" });
  const controls = el("div");
  const below = el("div");
  const view = new MapView(mapDiv, run);
  if (/^\d+$/.test(p.get("maxpts") || "")) view.limit = Math.max(1000, Number(p.get("maxpts")));  // points scattered at most
  const sampleBox = el("div");
  view.on("drawn", (sample) => fill(sampleBox, sampleNotice(sample)));
  view.selected = (p.get("sel") || "").split(",").filter((v) => /^\d+$/.test(v)).map(Number);
  cleanups.push(() => view.destroy());
  const legend = classLegend([view]);
  let retrieval = null;
  let logdet = null;
  let failures = null;
  let pairs = null;
  const selection = selectionPanel(run, { onClear: () => view.select([]), onPick: (id) => retrieval?.show(id) });
  view.on("select", (ids) => {
    setParams({ sel: ids.length <= 1000 ? ids.join(",") : "" });  // a selection of thousands stays out of the URL
    selection.show(ids, state.split);
  });

  const mapPanel = el("section", { class: "panel", "aria-labelledby": "map-h" },
    el("header", {}, el("h2", { id: "map-h" }, "Embedding map"),
      el("div", { class: "actions" }, el("button", { type: "button", onclick: () => downloadPng(mapDiv, `dmlscope-${run.id}-map`) }, "Download PNG"))),
    controls, mapStatus, mapDiv, sampleBox, legend.node,
    el("p", { class: "help" }, "Hover a point to see its image; click it to list its nearest neighbours; box or lasso (toolbar) or shift-click to select. A 2-D projection distorts distances: trust the neighbours, not the picture."));
  const side = el("div");
  root.append(el("div", { class: "grid-3" }, mapPanel, side), selection.node, below);

  let loads = 0; // a newer load supersedes a UMAP still computing
  async function load() {
    const mine = ++loads;
    const params = mapParams(state);
    let answered;
    const answer = new Promise((resolve) => { answered = resolve; });
    const wanted = api.points(run.id, state.split, state.proj, params, mapColumns(state.color), answered);
    wanted.catch(() => {}); // its failure is reported below, unless a newer load superseded it
    try {
      // UMAP is computed on first use (seconds to a minute): the PCA map is drawn meanwhile. A map the server
      // answers at once is not raced against its download (a million points take longer than FIRST_PICTURE_MS).
      const early = state.proj === "umap" && await Promise.race([answer.then(() => false), wanted.then(() => false, () => false),
        pause(FIRST_PICTURE_MS).then(() => true)]);
      if (early) {
        const pca = await api.points(run.id, state.split, "pca", { dim: params.dim }, mapColumns(state.color));
        if (mine !== loads) return;
        await show(pca);
        fill(mapStatus, el("p", { class: "state loading", id: "map-computing" },
          `Computing the UMAP map (n_neighbors ${params.n_neighbors}, min_dist ${params.min_dist}${params.dim === 3 ? ", 3-D" : ""}): showing PCA meanwhile…`));
      } else {
        fill(mapStatus, el("p", { class: "state loading" }, `Loading the ${state.proj.toUpperCase()} map…`));
      }
      const points = await wanted;
      if (mine !== loads) return;
      fill(mapStatus);
      await show(points);
    } catch (err) {
      if (mine === loads) fill(mapStatus, errorBox(err, "No map"));
    }
  }
  async function show(points) {
    view.setPoints(points);
    const noLogdet = !hasLogdet(view.points);
    if ((state.color === "logdet" && noLogdet) || (state.color === "split" && state.split !== "all")) state.color = "class";
    fill(controls, mapControls(state, onControl, { noLogdet, params: true }));
    view.selected = view.selected.filter((id) => view.index.has(id));
    await view.draw(state.color);
    legend.update();
    selection.show(view.selected, state.split);
    logdet?.update(view.points);
  }
  function onControl(change) {
    Object.assign(state, change);
    setParams(change);
    if ("color" in change) return view.draw(state.color);
    return load().then(() => {
      retrieval?.setSplit(state.split);
      failures?.load(state.split);
      pairs?.load(state.split);
    });
  }
  view.on("click", (imageId) => retrieval?.show(imageId));

  (async () => {
    await load();
    if (!view.points) return;
    await nextFrame();  // the map is painted before the other panels are built (their work would hold the frame)
    retrieval = retrievalPanel(run, view.points.class_names, {
      split: state.split,
      onQuery: (imageId) => setParams({ image: imageId }),
      onResult: (answer) => view.mark([answer.query.image_id, ...answer.neighbors.map((n) => n.image_id)]
        .filter((id) => id !== null)),
    });
    side.append(retrieval.node);
    if (p.get("image")) retrieval.show(Number(p.get("image")));
    const network = run.origin !== "embeddings";  // imported embeddings: no flow layer, no training history
    logdet = network ? logdetPanel(run, view, cleanups) : null;
    const pick = (id) => { retrieval.show(id); mapPanel.scrollIntoView({ block: "start" }); };
    failures = failurePanel(run, { noLogdet: !hasLogdet(view.points), onPick: pick });
    pairs = pairsPanel(run, { classCount: () => classColors(view.points).present.length, onPick: (classes) => {
      legend.isolate(classes.map((c) => view.points.class_names.indexOf(c)));
      mapPanel.scrollIntoView({ block: "start" });
    } }, cleanups);
    const curves = el("div", { class: "plot short", id: "history-curves" });
    const stats = el("div", {}, loading("statistics"));
    fill(below, stats, el("div", { class: "grid-2" }, failures.node, pairs.node), logdet?.node, network ?
      el("section", { class: "panel", "aria-labelledby": "curves-h" }, el("header", {}, el("h2", { id: "curves-h" }, "Training loss")), curves) : null);
    logdet?.update(view.points);
    failures.load(state.split);
    pairs.load(state.split);
    try {
      const s = await api.stats(run.id);
      const classes = el("div");
      fill(stats, metricsPanel(s), classes);
      classPanels(classes, s, run, cleanups, { onPick: async (record) => {  // the map of its split, if not shown
        if (state.split !== "all" && state.split !== record.split) await onControl({ split: record.split });
        legend.highlight([view.points.class_names.indexOf(record.name)]);
        mapPanel.scrollIntoView({ block: "start" });
      } });
      if (network) historyCurves(curves, s.history || []);
    } catch (err) {
      fill(stats, errorBox(err, "No statistics"));
    }
  })();
}

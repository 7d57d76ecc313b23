// Run A vs run B (/?compare=<a>,<b>): both maps in the same orientation with linked hover and selection,
// the metrics with differences, per-class radius and density paired by class, and the images whose nearest
// neighbours changed most.
import { api } from "../api.js";
import { describeChanges } from "../configform.js";
import { el, empty, errorBox, fill, fixed, loading, signed } from "../dom.js";
import { pairedBars } from "../explore/classstats.js";
import { classLegend } from "../explore/legend.js";
import { pairsDiffPanel } from "../explore/pairs.js";
import { selectionPanel } from "../explore/selection.js";
import { MapView, hasLogdet, mapControls, sharedRange, thumbUrl } from "../explore/map.js";
import { metricKeys, metricLabel } from "../metricnames.js";
import { gallery } from "../explore/retrieval.js";
import { downloadPng } from "../plots.js";
import { configLine, runLabel, statusBadge } from "../runinfo.js";
import { href, navigate, params, setParams } from "../url.js";

export function renderCompare(root, pair) {
  const cleanups = [];
  const [a, b] = pair.split(",");
  if (!a || !b) {
    root.append(errorBox({ error: "Pick two runs", detail: "the address must be /?compare=<run a>,<run b>" }));
    return () => {};
  }
  root.append(loading("the comparison"));
  Promise.all([api.compare(a, b), api.runs({ status: "done" }), api.stats(a), api.stats(b), api.runConfigDiff(a, b)])
    .then(([cmp, { data: runs }, sa, sb, diff]) => {
      fill(root);
      draw(root, { ...cmp, stats: { a: sa, b: sb }, changes: describeChanges(diff.changes) }, runs, cleanups);
    })
    .catch((err) => fill(root, errorBox(err, "Cannot compare"), el("a", { href: href({ tab: "runs" }), "data-nav": true }, "Pick two runs")));
  return () => cleanups.splice(0).forEach((f) => f());
}

function runPicker(id, label, current, runs, onPick) {
  const select = el("select", { id, onchange: () => onPick(select.value) },
    runs.map((r) => el("option", { value: r.id, selected: r.id === current.id }, `${runLabel(r)} (${r.id.slice(0, 6)})`)));
  return el("label", { for: id }, label, select);
}

function draw(root, cmp, runs, cleanups) {
  const { a, b, changes } = cmp;
  const pick = (which) => (id) => navigate({ compare: which === "a" ? `${id},${b.id}` : `${a.id},${id}` });
  root.append(el("section", { class: "panel", "aria-labelledby": "cmp-h" },
    el("header", {}, el("h2", { id: "cmp-h" }, "Compare runs"),
      el("div", { class: "actions" }, runPicker("cmp-a", "A", a, runs, pick("a")), runPicker("cmp-b", "B", b, runs, pick("b")))),
    el("div", { class: "grid-2" },
      [["A", a], ["B", b]].map(([tag, r]) => el("p", {}, el("strong", {}, `${tag}: `),
        el("a", { href: href({ run: r.id }), "data-nav": true }, runLabel(r)), " ", statusBadge(r),
        el("br"), el("span", { class: "small" }, configLine(r.config, r.origin))))),
    el("p", {}, el("strong", {}, "B differs from A in: "), changes.length ? changes.join("; ") : "nothing (same settings: a seed check)"),
    cmp.same_dataset ? null : el("p", { class: "state error" }, "The runs use different image sets: maps are not aligned and no images are shared.")));

  const maps = mapsSection(root, cmp, cleanups);
  root.append(el("div", { class: "grid-2" }, el("div", {}, metricsTable(cmp), geometryTable(cmp)), changedPanel(cmp, maps.select)));
  const pairs = el("div", { class: "grid-2" });
  root.append(pairs);
  pairedBars(pairs, cmp, cleanups);
  if (cmp.same_dataset) root.append(pairsDiffPanel(a, b, cleanups));
}

function mapsSection(root, cmp, cleanups) {
  const { a, b } = cmp;
  const p = params();
  const state = { proj: p.get("proj") || "umap", split: p.get("split") || "test", color: p.get("color") || "class" };
  const divs = [a, b].map((r, i) => el("div", { class: "plot", id: `map-${"ab"[i]}`, role: "img", "aria-label": `map of run ${"AB"[i]}` }));
  const views = [new MapView(divs[0], a, `A: ${runLabel(a)}`), new MapView(divs[1], b, `B: ${runLabel(b)}`)];
  cleanups.push(() => views.forEach((v) => v.destroy()));
  const controls = el("div");
  const status = el("div", { role: "status" });
  const neighbours = el("div", { class: "grid-2" });
  let selected = null;

  const markAll = (ids) => views.forEach((v) => v.mark(ids));
  async function select(imageId) {
    selected = imageId;
    setParams({ image: imageId });
    markAll([imageId]);
    fill(neighbours, loading("neighbours in both runs"), null);
    const answers = await Promise.all(views.map((v) => api.neighbors(v.run.id, imageId, 10).catch((err) => err)));
    fill(neighbours, answers.map((ans, i) => el("div", {}, el("h3", {}, `${"AB"[i]}: ${runLabel(views[i].run)}`),
      ans instanceof Error ? errorBox(ans) : gallery(ans, select))));
  }
  // A selection on either map is the same images in both: each run's panel measures them in that run.
  const panels = views.map((v, i) => selectionPanel(v.run, { id: `selection-${"ab"[i]}`, title: `Selection in ${"AB"[i]}`,
    onClear: () => views.forEach((w) => w.select([])), onPick: (id) => select(id) }));
  let syncing = false;
  views.forEach((v, i) => v.on("select", (ids) => {
    panels[i].show(ids.filter((id) => v.index.has(id)), state.split);
    if (syncing) return;
    syncing = true;
    views[1 - i].select(ids);
    syncing = false;
    setParams({ sel: ids.join(",") });
  }));
  const fromUrl = (p.get("sel") || "").split(",").filter((v) => /^\d+$/.test(v)).map(Number);
  views.forEach((v) => { v.selected = fromUrl; });
  views.forEach((v, i) => {
    const other = views[1 - i];
    v.on("hover", (id) => other.mark(selected === null ? [id] : [id, selected]));
    v.on("unhover", () => markAll(selected === null ? [] : [selected]));
    v.on("click", select);
  });

  async function load() {
    fill(status, el("p", { class: "state loading" }, "Loading both maps (a UMAP is computed on first use: up to a minute)…"));
    try {
      // B's map comes aligned onto A's by the server (Procrustes on the images both show: ?align_to=).
      await Promise.all(views.map((v, i) => v.load(state.split, state.proj, i && cmp.same_dataset ? { align_to: a.id } : {})));
    } catch (err) {
      fill(status, errorBox(err, "No maps"));
      return;
    }
    const aligned = views[1].points.aligned_to === a.id;
    fill(status, aligned ? el("p", { class: "help" }, "B is rotated/reflected and scaled onto A using the images both show; hover one to find it in the other.") : null);
    const noLogdet = !views.some((v) => hasLogdet(v.points));
    if (state.color === "logdet" && noLogdet) state.color = "class";
    fill(controls, mapControls(state, onControl, { noLogdet, prefix: "cmp" }));
    await drawBoth();
    legend.update();
    views.forEach((v, i) => panels[i].show(v.selected.filter((id) => v.index.has(id)), state.split));
  }
  // One colour scale for both maps: the same colour is the same value in A and B.
  const drawBoth = () => {
    const range = sharedRange(views.map((v) => v.points), state.color);
    return Promise.all(views.map((v) => v.draw(state.color, range)));
  };
  function onControl(change) {
    Object.assign(state, change);
    setParams(change);
    if ("color" in change) drawBoth();
    else load();
  }
  const legend = classLegend(views);
  root.append(el("section", { class: "panel", "aria-labelledby": "maps-h" },
    el("header", {}, el("h2", { id: "maps-h" }, "Maps side by side"),
      el("div", { class: "actions" }, divs.map((d, i) => el("button", { type: "button",
        onclick: () => downloadPng(d, `dmlscope-compare-${"ab"[i]}`) }, `Download ${"AB"[i]} as PNG`)))),
    controls, status, el("div", { class: "grid-2" }, divs), legend.node,
    el("div", { class: "grid-2" }, panels.map((sp) => sp.node)),
    el("h3", {}, "Selected image: nearest neighbours in A and B"),
    neighbours));
  fill(neighbours, empty("Click a point in either map (or a changed image below)."));
  load().then(() => { if (/^\d+$/.test(p.get("image") || "")) select(Number(p.get("image"))); });
  return { select };
}

function metricsTable(cmp) {
  const rows = [];
  const retrieval = new Set(metricKeys("retrieval"));
  for (const split of ["test", "train"]) {
    for (const [name, m] of Object.entries(cmp.metrics?.[split] || {})) {
      if (!retrieval.has(name) || typeof m?.a !== "number") continue;
      const shown = Number(signed(m.diff).replace("−", "-"));  // the arrow follows the difference as shown
      const cls = shown > 0 ? "better" : shown < 0 ? "worse" : "";
      const sign = shown > 0 ? "▲ " : shown < 0 ? "▼ " : "";
      rows.push(el("tr", {}, el("td", {}, split === "test" ? "test (unseen)" : "train (seen)"),
        el("td", {}, metricLabel(name)),
        el("td", { class: "num" }, fixed(m.a)), el("td", { class: "num" }, fixed(m.b)),
        el("td", { class: `num ${cls}`, title: `B − A = ${m.diff}` }, `${sign}${signed(m.diff)}`)));
    }
  }
  return el("section", { class: "panel", "aria-labelledby": "cmp-metrics-h" },
    el("header", {}, el("h2", { id: "cmp-metrics-h" }, "Metrics"), el("span", { class: "help" }, "difference = B − A; higher is better for all")),
    rows.length ? el("table", { id: "compare-metrics" }, el("thead", {}, el("tr", {}, el("th", {}, "split"), el("th", {}, "metric"),
      el("th", { class: "num" }, "A"), el("th", { class: "num" }, "B"), el("th", { class: "num" }, "B − A"))), el("tbody", {}, rows))
      : empty("No metrics to compare."));
}

// [key, unit-free]; labels from GET /api/metrics, except the ratio this view derives from the two summaries.
const GEOMETRY = [["delta1", false], ["delta2", false], ["margin", false], ["pi_ratio", true], ["spectral_decay", true],
  ["radius_ratio", true]];
const RADIUS_RATIO = "radius test ÷ train (r* / r)";

/** The global geometry of both runs on their test (unseen) classes; distances are in each run's own units,
 * so only the unit-free rows get a difference when the two distances differ. */
function geometryTable(cmp) {
  const same = cmp.a.config.distance.name === cmp.b.config.distance.name;
  const value = (which, key) => {
    if (key === "radius_ratio") {
      const s = cmp[which].summary || {};
      return s.test?.radius_mean && s.train?.radius_mean ? s.test.radius_mean / s.train.radius_mean : null;
    }
    return cmp.stats?.[which]?.stats?.test?.global?.[key];
  };
  return el("section", { class: "panel", "aria-labelledby": "cmp-geometry-h" },
    el("header", {}, el("h2", { id: "cmp-geometry-h" }, "Global geometry (test classes)"),
      el("span", { class: "help" }, same ? "same distance: all rows compare" : "different distances: only the unit-free rows (✓) compare")),
    el("table", { id: "compare-geometry" }, el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "unit-free"),
      el("th", { class: "num" }, "A"), el("th", { class: "num" }, "B"), el("th", { class: "num" }, "B − A"))),
    el("tbody", {}, GEOMETRY.map(([key, free]) => {
      const label = key === "radius_ratio" ? RADIUS_RATIO : metricLabel(key);
      const [a, b] = [value("a", key), value("b", key)];
      const diff = (same || free) && typeof a === "number" && typeof b === "number" ? signed(b - a) : "—";
      return el("tr", {}, el("td", {}, label), el("td", {}, free ? "✓" : ""), el("td", { class: "num" }, fixed(a)),
        el("td", { class: "num" }, fixed(b)), el("td", { class: "num" }, diff));
    }))));
}

/** "+3 −3": how many neighbours entered B's k-NN set and left A's; the title lists them. */
function changeCaption(c) {
  const entered = c.b_neighbors.filter((id) => !c.a_neighbors.includes(id));
  const left = c.a_neighbors.filter((id) => !c.b_neighbors.includes(id));
  return el("figcaption", { class: "muted changes", title: `entered in B: ${entered.map((i) => `#${i}`).join(", ") || "none"}\nleft from A: ${left.map((i) => `#${i}`).join(", ") || "none"}` },
    `+${entered.length} −${left.length}`);
}

function changedPanel(cmp, select) {
  const ds = cmp.b.dataset_id;
  return el("section", { class: "panel", "aria-labelledby": "changed-h" },
    el("header", {}, el("h2", { id: "changed-h" }, "Neighbourhoods that changed most"),
      el("span", { class: "help" }, "Jaccard overlap of the k-NN sets in A and B; click to inspect")),
    cmp.changed.length ? el("div", { class: "gallery" }, cmp.changed.map((c) => el("button", { type: "button", class: "plain",
      onclick: () => select(c.image_id), title: `image #${c.image_id}: show its neighbours in A and B` },
      el("figure", {}, el("img", { src: c.thumb_url || thumbUrl(ds, c.image_id), alt: `${c.class} #${c.image_id}` }),
        el("figcaption", {}, `${c.class} #${c.image_id}`), el("figcaption", { class: "muted" }, `J = ${fixed(c.jaccard, 2)}`),
        changeCaption(c)))))
      : empty(cmp.same_dataset ? "No neighbourhood changed." : "Different image sets: nothing to match."));
}

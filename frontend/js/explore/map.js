// The projection map of a run: typed arrays from the binary points endpoint drawn as ONE scattergl trace,
// recoloured in place by class, log|det J|, local Lipschitz estimate, correct@1 (or split). Hovering shows
// the image's thumbnail next to the cursor; clicking selects the image. A page fetches the columns its
// colouring needs (mapColumns) and a continuous colouring's column when it is first chosen.
import { api } from "../api.js";
import { el, fmt } from "../dom.js";
import { hideCard, showCard } from "../hovercard.js";
import { classColor, drawMap, highlight, markerFor, onPoints, purge } from "../plots.js";

const COLORINGS = {
  class: "class",
  logdet: "log|det J|",
  lipschitz: "local Lipschitz estimate",
  lipschitz_network: "whole-network Lipschitz (sampled)",
  correct: "correct@1",
  split: "seen / unseen classes",
};
const PROJECTIONS = { umap: "UMAP", pca: "PCA" };
const SPLITS = { test: "test: unseen classes", train: "train: seen classes", all: "both, one shared map" };

export const thumbUrl = (datasetId, imageId) => `api/datasets/${datasetId}/images/${imageId}/thumb`;

const BASE_COLUMNS = ["image_id", "label", "split", "x", "y", "z", "correct_at_1"];

/** The columns a map coloured by `colorKey` needs: positions, ids, labels and filters, log|det J| (its
 * absence tells a run without a flow layer; the log|det J| panel draws it) and the colouring's own column. */
export function mapColumns(colorKey) {
  return [...BASE_COLUMNS, "logdet", ...(CONTINUOUS.includes(colorKey) && colorKey !== "logdet" ? [colorKey] : [])];
}

/** True when the run has a flow layer: the logdet column has a value (the server leaves it out otherwise). */
export function hasLogdet(points) {
  const col = points.columns.logdet;
  return Boolean(col) && col.some((v) => !Number.isNaN(v));
}

/** The classes present in `points` (label indices, ascending) and label → colour. A class's colour follows
 * its label in the dataset, never its rank among the classes shown, so switching the split (or comparing two
 * runs) keeps every class's colour. */
export function classColors(points) {
  const present = [...new Set(points.columns.label)].sort((a, b) => a - b);
  return { present, color: new Map(present.map((label) => [label, classColor(label)])) };
}

/** Marker options for colouring `points` by `key`; `range` [cmin, cmax] fixes a continuous scale (compare). */
function coloring(points, key, range = null) {
  const c = points.columns;
  if (key === "class") {  // the legend below the map names the classes (and isolates/hides them)
    return { ...markerFor({ kind: "category", values: c.label, labels: points.class_names,
      colors: points.class_names.map((_, i) => classColor(i)), title: "class" }), showscale: false };
  }
  if (key === "correct") {
    return markerFor({ kind: "category", values: c.correct_at_1, labels: ["wrong", "right"],
      colors: ["#d62728", "#9bb7d4"], title: "correct@1" });
  }
  if (key === "split") {
    return markerFor({ kind: "category", values: c.split, labels: ["train", "test"], colors: ["#9c755f", "#4e79a7"], title: "split" });
  }
  const column = continuous(points, key);
  if (!column || !column.some((v) => !Number.isNaN(v))) {
    // A run without a flow layer (logdet), or measured before the whole-network Lipschitz existed: an all-NaN
    // colour array breaks the colour bar. lipschitz_network is a seeded sample: Plotly draws the NaN rest grey.
    return { size: 5, color: "#b8c0cc", opacity: 0.7, showscale: false };
  }
  const marker = markerFor({ kind: "continuous", values: column,
    title: key === "logdet" ? "log|det J|" : "Lipschitz" });
  return range ? { ...marker, cmin: range[0], cmax: range[1] } : marker;
}

const CONTINUOUS = ["logdet", "lipschitz", "lipschitz_network"];
const continuous = (points, key) => points.columns[key];

/** [min, max] of a continuous colouring over several maps (NaN skipped), so that one colour means one value
 * in all of them; null for a categorical colouring or when no map has a value. */
export function sharedRange(pointsList, key) {
  if (!CONTINUOUS.includes(key)) return null;
  let lo = Infinity;
  let hi = -Infinity;
  for (const points of pointsList) {
    for (const v of continuous(points, key) || []) if (!Number.isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  return lo <= hi ? [lo, hi] : null;
}

/** image id → row. A typed array when the ids are dense enough (a Map of a million entries takes a second to
 * build), else a Map; both answer get (undefined when absent) and has. */
class IdIndex {
  constructor(ids) {
    let top = -1;
    for (let i = 0; i < ids.length; i += 1) if (ids[i] > top) top = ids[i];
    if (top < 4 * ids.length + 1024) {
      this.rows = new Int32Array(top + 1).fill(-1);
      for (let i = 0; i < ids.length; i += 1) this.rows[ids[i]] = i;  // a repeated id: its last row
    } else {
      this.map = new Map();
      for (let i = 0; i < ids.length; i += 1) this.map.set(ids[i], i);
    }
  }

  get(id) {
    if (this.map) return this.map.get(id);
    const row = Number.isInteger(id) && id >= 0 && id < this.rows.length ? this.rows[id] : -1;
    return row >= 0 ? row : undefined;
  }

  has(id) {
    return this.get(id) !== undefined;
  }
}

/** One map in a div: load(split, projection), draw(coloring), mark(imageIds), hover/click callbacks. */
export class MapView {
  constructor(div, run, title = "") {
    this.div = div;
    this.run = run;
    this.title = title;
    this.points = null;
    this.index = new Map(); // image_id → row
    this.handlers = { hover: [], click: [], unhover: [], select: [] };
    this.marked = []; // image ids ringed on the map; kept across redraws
    this.hidden = new Set(); // labels not drawn (the legend's hide / isolate)
    this.wrongOnly = false; // draw only the images whose nearest neighbour has another class
    this.selected = []; // image ids of the lasso / box selection; kept across redraws
    this.colorKey = "class";
    this.range = null;
  }

  /** Fetch and keep the map of `split` by `projection`; `params` {n_neighbors, min_dist, dim} (see mapParams). */
  async load(split, projection, params = {}) {
    return this.setPoints(await api.points(this.run.id, split, projection, params));
  }

  /** Show `points` (one api.points answer) from the next draw on. */
  setPoints(points) {
    this.points = points;
    this.index = new IdIndex(points.columns.image_id);
    return points;
  }

  /** Fetch the column a continuous colouring `key` needs when this map's points lack it (columns on demand). */
  async ensure(key) {
    const p = this.points;
    if (!CONTINUOUS.includes(key) || p.columns[key] || p.absent?.includes(key)) return;
    const more = await api.points(this.run.id, p.split, p.projection, p.params, [key]);
    if (this.points !== p) return;
    Object.assign(p.columns, more.columns);
    p.absent = [...(p.absent || []), ...more.absent];
  }

  /** True for the rows the filters let through (legend, wrong@1 only). */
  visible(row) {
    const c = this.points.columns;
    return !this.hidden.has(c.label[row]) && !(this.wrongOnly && c.correct_at_1[row]);
  }

  /** Draw with colouring `colorKey` (default: the last one); `range` fixes a continuous colour scale. */
  async draw(colorKey = this.colorKey, range = this.range) {
    this.colorKey = colorKey;
    this.range = range;
    await this.ensure(colorKey);
    const c = this.points.columns;
    const filtered = this.hidden.size || this.wrongOnly;
    // Filtered-out points become NaN (not drawn) so that point indices stay image rows.
    const shown = (col) => (col && filtered ? Float32Array.from(col, (v, i) => (this.visible(i) ? v : NaN)) : col);
    const [x, y, z] = [shown(c.x), shown(c.y), shown(c.z) || null];
    const fresh = !this.div.data;
    const note = colorKey === "logdet" && !hasLogdet(this.points) ? " (flow layer off: no log|det J|)" : "";
    const rows = this.selected.map((id) => this.index.get(id)).filter((r) => r !== undefined);
    const axis = (k) => `${PROJECTIONS[this.points.projection] || this.points.projection} ${k}`;
    await drawMap(this.div, { x, y, z, marker: coloring(this.points, colorKey, range), title: this.title + note,
      xTitle: axis(1), yTitle: axis(2), zTitle: axis(3),
      selected: this.selected.length ? rows : null, dragmode: this.div._fullLayout?.dragmode });
    if (fresh) this.listen();
    this.mark(this.marked);
  }

  /** Replace the selection (image ids) and tell the "select" handlers; `redraw` false when Plotly already
   * shows it (a box or lasso drawn on this map). */
  select(imageIds, { redraw = true } = {}) {
    this.selected = [...new Set(imageIds)];
    if (redraw && this.points) this.draw();
    this.handlers.select.forEach((f) => f(this.selected));
  }

  listen() {
    onPoints(this.div, {
      hover: (row, mouse) => {
        const id = this.points.columns.image_id[row];
        showCard(thumbUrl(this.run.dataset_id, id), this.caption(row), mouse);
        this.handlers.hover.forEach((f) => f(id, mouse));
      },
      unhover: () => { hideCard(); this.handlers.unhover.forEach((f) => f()); },
      click: (row, ev) => {
        const id = this.points.columns.image_id[row];
        if (ev?.shiftKey) {  // shift-click extends (or shrinks) the selection
          this.select(this.selected.includes(id) ? this.selected.filter((s) => s !== id) : [...this.selected, id]);
          return;
        }
        this.handlers.click.forEach((f) => f(id));
      },
      // Plotly reports an empty selection when a drag starts, then the real one: only a deselect clears.
      selected: (rows) => rows.length && this.select(rows.map((r) => this.points.columns.image_id[r]), { redraw: false }),
      deselect: () => this.select([], { redraw: false }),
    });
  }

  on(kind, handler) {
    this.handlers[kind].push(handler);
  }

  caption(row) {
    const c = this.points.columns;
    const parts = [`${this.points.class_names[c.label[row]]} · #${c.image_id[row]}`];
    if (c.logdet && !Number.isNaN(c.logdet[row])) parts.push(`log|det J| ${fmt(c.logdet[row], 2)}`);
    if (c.lipschitz) parts.push(`Lip ${fmt(c.lipschitz[row], 2)}`);
    parts.push(c.correct_at_1[row] ? "NN right" : "NN wrong");
    return parts.join(" · ");
  }

  /** Ring the images `imageIds` (those on this map); returns how many were found. */
  mark(imageIds) {
    this.marked = imageIds;
    const rows = imageIds.map((id) => this.index.get(id)).filter((r) => r !== undefined);
    highlight(this.div, rows);
    return rows.length;
  }

  destroy() {
    hideCard();
    purge(this.div);
  }
}

// UMAP's settings in the URL (&nn=, &md=) and the 3-D switch (&dim=3); the ranges are the API's.
const NN = { min: 2, max: 200, fallback: 15 };
const MD = { min: 0, max: 0.99, fallback: 0.1 };

/** The map parameters {n_neighbors, min_dist, dim} of `state` (keys nn, md, dim: URL strings), defaults
 * for missing or out-of-range values; PCA sends only its dimension. */
export function mapParams(state) {
  const num = (v, { min, max, fallback }) => (v !== undefined && v !== null && v !== "" && Number(v) >= min && Number(v) <= max ? Number(v) : fallback);
  const dim = state.dim === "3" || state.dim === 3 ? 3 : 2;
  if (state.proj !== "umap") return { dim };
  return { n_neighbors: Math.round(num(state.nn, NN)), min_dist: num(state.md, MD), dim };
}

/** Projection / split / colouring selects; `onChange({proj|split|color: value})`. `noLogdet` disables that
 * colouring with the reason in its label. `params` adds UMAP's n_neighbors / min_dist (onChange({nn|md}),
 * only a valid number is passed on) and a 3-D switch (onChange({dim: "3"|""})). */
export function mapControls(state, onChange, { noLogdet = false, prefix = "map", params = false } = {}) {
  const select = (key, label, options) => {
    const id = `${prefix}-${key}`;
    const s = el("select", { id, onchange: () => onChange({ [key]: s.value }) },
      Object.entries(options).map(([value, text]) => {
        const off = (key === "color" && value === "logdet" && noLogdet) || (key === "color" && value === "split" && state.split !== "all");
        return el("option", { value, selected: value === state[key], disabled: off },
          off && value === "logdet" ? `${text}: flow layer off` : text);
      }));
    return el("label", { for: id }, label, s);
  };
  const current = mapParams(state);
  const number = (key, label, range, step, value, title) => {
    const id = `${prefix}-${key}`;
    const input = el("input", { id, type: "number", min: range.min, max: range.max, step, value, title,
      disabled: state.proj !== "umap", class: "narrow",
      onchange: () => (input.checkValidity() && input.value !== "" ? onChange({ [key]: input.value }) : input.reportValidity()) });
    return el("label", { for: id, title }, label, input);
  };
  const toggle = () => {
    const id = `${prefix}-dim`;
    const box = el("input", { id, type: "checkbox", checked: current.dim === 3, onchange: () => onChange({ dim: box.checked ? "3" : "" }) });
    return el("label", { for: id, class: "check", title: "a 3-component map: drag to rotate" }, box, "3-D");
  };
  return el("div", { class: "row" },
    select("proj", "Projection", PROJECTIONS),
    params ? number("nn", "n_neighbors", NN, 1, current.n_neighbors ?? NN.fallback,
      `UMAP: neighbours per point, ${NN.min}–${NN.max}; small = local detail, large = global layout`) : null,
    params ? number("md", "min_dist", MD, 0.05, current.min_dist ?? MD.fallback,
      `UMAP: how tightly points may pack, ${MD.min}–${MD.max}`) : null,
    params ? toggle() : null,
    select("split", "Images", SPLITS),
    select("color", "Colour by", COLORINGS));
}

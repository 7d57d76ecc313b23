// The projection map of a run: typed arrays from the binary points endpoint drawn as ONE scattergl trace,
// recoloured in place by class, log|det J|, local Lipschitz estimate, correct@1 (or split). Hovering shows
// the image's thumbnail next to the cursor; clicking selects the image. A page fetches the columns its
// colouring needs (mapColumns) and a continuous colouring's column when it is first chosen.
import { api } from "../api.js";
import { el, fmt } from "../dom.js";
import { hideCard, showCard } from "../hovercard.js";
import { drawMap, highlight, onPoints, purge } from "../plots.js";
import { CONTINUOUS, GREY, categories, coloring } from "./mapcolor.js";
import { DRAW_LIMIT, SAMPLE_SIZE, densityGrid, groupRows, selectRows, stratifiedSample } from "./sample.js";

export { classColors, sharedRange } from "./mapcolor.js";

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

const GROUPED_FROM = 20_000; // drawn points past which a categorical colouring is drawn as one trace per colour

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

/** One map in a div: load(split, projection), draw(coloring), mark(imageIds), hover/click callbacks. Past
 * `limit` points it scatters a seeded sample stratified by class over a density layer of all points
 * (`sample` says so after a draw); hover, click, marks and selections still name images of the whole map. */
export class MapView {
  constructor(div, run, title = "") {
    this.div = div;
    this.run = run;
    this.title = title;
    this.points = null;
    this.index = new Map(); // image_id → row
    this.handlers = { hover: [], click: [], unhover: [], select: [], drawn: [] };
    this.marked = []; // image ids ringed on the map; kept across redraws
    this.hidden = new Set(); // labels not drawn (the legend's hide / isolate)
    this.focus = []; // labels drawn in distinct colours over a grey rest (searched or picked classes)
    this.wrongOnly = false; // draw only the images whose nearest neighbour has another class
    this.selected = []; // image ids of the lasso / box selection; kept across redraws
    this.colorKey = "class";
    this.range = null;
    this.limit = DRAW_LIMIT; // points scattered at most
    this.rows = null; // rows of the points drawn, in trace order (null: every row, in order)
    this.sample = null; // {shown, total} when a sample is drawn
    this.cache = {}; // sample rows and density grid of the current points and filters
  }

  /** Fetch and keep the map of `split` by `projection`; `params` {n_neighbors, min_dist, dim} (see mapParams). */
  async load(split, projection, params = {}) {
    return this.setPoints(await api.points(this.run.id, split, projection, params));
  }

  /** Show `points` (one api.points answer) from the next draw on. */
  setPoints(points) {
    this.points = points;
    this.index = new IdIndex(points.columns.image_id);
    this.cache = {};
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

  /** The rows to draw, in drawing order: the visible ones (a stratified sample of them past `limit`), the
   * focused classes last so that they lie on top; null when that is every row in order. Kept per filter. */
  drawnRows() {
    const c = this.points.columns;
    const n = c.x.length;
    const filtered = this.hidden.size > 0 || this.wrongOnly;
    const keep = filtered ? (i) => this.visible(i) : null;
    const key = `${[...this.hidden].join(",")}|${this.wrongOnly}|${this.limit}`;
    if (this.cache.key !== key || this.cache.points !== this.points) {
      let rows = n > this.limit ? stratifiedSample(c.label, Math.min(this.limit, SAMPLE_SIZE), { seed: 0, keep }) : null;
      if (!rows && keep) rows = Int32Array.from({ length: n }, (_, i) => i).filter(keep);
      const density = n > this.limit && !c.z ? densityGrid(c.x, c.y, 200, keep) : null;
      this.cache = { key, points: this.points, rows, density, total: n > this.limit && keep ? countRows(n, keep) : n };
    }
    let { rows } = this.cache;
    if (this.focus.length) {
      const focus = new Set(this.focus);
      const all = rows || Int32Array.from({ length: n }, (_, i) => i);
      const [rest, top] = [all.filter((r) => !focus.has(c.label[r])), all.filter((r) => focus.has(c.label[r]))];
      rows = new Int32Array(all.length);
      rows.set(rest);
      rows.set(top, rest.length);
    }
    return rows;
  }

  /** Draw with colouring `colorKey` (default: the last one); `range` fixes a continuous colour scale. */
  async draw(colorKey = this.colorKey, range = this.range) {
    this.colorKey = colorKey;
    this.range = range;
    await this.ensure(colorKey);
    performance.mark("map:rows");  // where a draw's time goes (bench/browser_map reads these marks)
    const c = this.points.columns;
    let rows = this.drawnRows();
    const drawnCount = rows ? rows.length : c.x.length;
    let groups = null;
    const byColor = !c.z && drawnCount > GROUPED_FROM
      && categories(this.points, colorKey, { take: (col) => (rows ? gather(col, rows) : col), focus: this.focus });
    if (byColor) {  // grey first, so that the coloured points lie on top
      const { colors } = byColor;
      const order = colors.map((_, k) => k).sort((a, b) => (colors[b] === GREY) - (colors[a] === GREY));
      [rows, groups] = groupRows(rows || Int32Array.from({ length: drawnCount }, (_, i) => i), byColor.codes, order);
      groups = groups.map(({ start, end, code }) => ({ start, end, color: colors[code] }));
    }
    this.rows = rows;
    const take = (col) => (col && rows ? gather(col, rows) : col);
    const [x, y, z] = [take(c.x), take(c.y), take(c.z) || null];
    this.sample = c.x.length > this.limit ? { shown: drawnCount, total: this.cache.total } : null;
    const fresh = !this.div.data;
    const note = colorKey === "logdet" && !hasLogdet(this.points) ? " (flow layer off: no log|det J|)" : "";
    const axis = (k) => `${PROJECTIONS[this.points.projection] || this.points.projection} ${k}`;
    const marker = coloring(this.points, colorKey, { take, range, focus: this.focus, size: drawnCount > 50_000 ? 3 : 5 });
    performance.mark("map:plotly");
    await drawMap(this.div, { x, y, z, marker, groups, title: this.title + note, xTitle: axis(1), yTitle: axis(2), zTitle: axis(3),
      selected: this.selected.length ? this.tracePositions(this.selected) : null, dragmode: this.div._fullLayout?.dragmode,
      density: this.sample ? this.cache.density : null, ring: this.ring(this.marked) });  // no restyle: it redoes every trace
    performance.mark("map:drawn");
    if (fresh) this.listen();
    this.handlers.drawn.forEach((f) => f(this.sample));
  }

  /** Positions in the drawn trace of the images `imageIds` that are drawn. */
  tracePositions(imageIds) {
    const rows = imageIds.map((id) => this.index.get(id)).filter((r) => r !== undefined);
    if (!this.rows) return rows;
    const wanted = new Set(rows);
    const out = [];
    this.rows.forEach((r, i) => { if (wanted.has(r)) out.push(i); });
    return out;
  }

  /** The image row of point `i` of the drawn trace. */
  rowAt(i) {
    return this.rows ? this.rows[i] : i;
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
      hover: (i, mouse) => {
        const row = this.rowAt(i);
        const id = this.points.columns.image_id[row];
        showCard(thumbUrl(this.run.dataset_id, id), this.caption(row), mouse);
        this.handlers.hover.forEach((f) => f(id, mouse));
      },
      unhover: () => { hideCard(); this.handlers.unhover.forEach((f) => f()); },
      click: (i, ev) => {
        const id = this.points.columns.image_id[this.rowAt(i)];
        if (ev?.shiftKey) {  // shift-click extends (or shrinks) the selection
          this.select(this.selected.includes(id) ? this.selected.filter((s) => s !== id) : [...this.selected, id]);
          return;
        }
        this.handlers.click.forEach((f) => f(id));
      },
      // Plotly reports an empty selection when a drag starts, then the real one: only a deselect clears. On a
      // sample, the box or lasso selects among all points, drawn or not.
      selected: (positions, ev) => {
        const c = this.points.columns;
        const rows = this.sample && (ev?.range || ev?.lassoPoints)
          ? selectRows(c.x, c.y, ev, (i) => this.visible(i)) : positions.map((i) => this.rowAt(i));
        if (rows.length) this.select(Array.from(rows, (r) => c.image_id[r]), { redraw: false });
      },
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

  /** Positions {x, y, z} of the images `imageIds` on this map (drawn in the sample or not). */
  ring(imageIds) {
    const c = this.points.columns;
    const rows = imageIds.map((id) => this.index.get(id)).filter((r) => r !== undefined);
    return { x: rows.map((r) => c.x[r]), y: rows.map((r) => c.y[r]), z: c.z ? rows.map((r) => c.z[r]) : null };
  }

  /** Ring the images `imageIds`; returns how many are on this map. */
  mark(imageIds) {
    const before = this.marked.length;
    this.marked = imageIds;
    const ring = this.ring(imageIds);
    if (before || ring.x.length) highlight(this.div, ring);  // a restyle costs as much as a draw: none for nothing
    return ring.x.length;
  }

  destroy() {
    hideCard();
    purge(this.div);
  }
}

function gather(col, rows) {
  const out = new col.constructor(rows.length);
  for (let i = 0; i < rows.length; i += 1) out[i] = col[rows[i]];
  return out;
}

function countRows(n, keep) {
  let count = 0;
  for (let i = 0; i < n; i += 1) if (keep(i)) count += 1;
  return count;
}

/** A line under a map that says when it shows a sample: "showing 200 000 of 1 000 000 points…". */
export function sampleNotice(sample) {
  if (!sample) return null;
  const n = (v) => v.toLocaleString("en-US").replace(/,/g, " ");
  return el("p", { class: "help", id: "map-sample" }, `Showing ${n(sample.shown)} of ${n(sample.total)} points (a sample `
    + "that keeps every class, over the density of all of them); statistics, neighbours and box or lasso selections use all.");
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

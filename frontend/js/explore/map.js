// The projection map of a run: typed arrays from the binary points endpoint drawn as ONE scattergl trace,
// recoloured in place by class, log|det J|, local Lipschitz estimate, correct@1 (or split). Hovering shows
// the image's thumbnail next to the cursor; clicking selects the image.
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

/** True when the run has no flow layer: the logdet column is all NaN (or absent). */
export function hasLogdet(points) {
  const col = points.columns.logdet;
  return Boolean(col) && col.some((v) => !Number.isNaN(v));
}

/** The classes present in `points` (label indices, ascending) and label → colour. Colours follow the rank
 * among the present classes, so a split's few classes get the most distinct colours, and two runs showing
 * the same images (a comparison) colour every class alike. */
export function classColors(points) {
  const present = [...new Set(points.columns.label)].sort((a, b) => a - b);
  return { present, color: new Map(present.map((label, i) => [label, classColor(i)])) };
}

/** Marker options for colouring `points` by `key`. */
function coloring(points, key) {
  const c = points.columns;
  if (key === "class") {
    const { present, color } = classColors(points);
    const code = new Map(present.map((label, i) => [label, i]));
    return markerFor({ kind: "category", values: Int32Array.from(c.label, (l) => code.get(l)),
      labels: present.map((l) => points.class_names[l]), colors: present.map((l) => color.get(l)), title: "class" });
  }
  if (key === "correct") {
    return markerFor({ kind: "category", values: c.correct_at_1, labels: ["wrong", "right"],
      colors: ["#d62728", "#9bb7d4"], title: "correct@1" });
  }
  if (key === "split") {
    return markerFor({ kind: "category", values: c.split, labels: ["train", "test"], colors: ["#9c755f", "#4e79a7"], title: "split" });
  }
  const column = key === "logdet" ? c.logdet : key === "lipschitz_network" ? c.lipschitz_network : c.lipschitz;
  if (!column || !column.some((v) => !Number.isNaN(v))) {
    // A run without a flow layer (logdet), or measured before the whole-network Lipschitz existed: an all-NaN
    // colour array breaks the colour bar. lipschitz_network is a seeded sample: Plotly draws the NaN rest grey.
    return { size: 5, color: "#b8c0cc", opacity: 0.7, showscale: false };
  }
  return markerFor({ kind: "continuous", values: column, title: key === "logdet" ? "log|det J|" : "Lipschitz" });
}

/** One map in a div: load(split, projection), draw(coloring), mark(imageIds), hover/click callbacks. */
export class MapView {
  constructor(div, run, title = "") {
    this.div = div;
    this.run = run;
    this.title = title;
    this.points = null;
    this.index = new Map(); // image_id → row
    this.handlers = { hover: [], click: [], unhover: [] };
    this.marked = []; // image ids ringed on the map; kept across redraws
  }

  async load(split, projection) {
    this.points = await api.points(this.run.id, split, projection);
    this.index = new Map(Array.from(this.points.columns.image_id, (id, row) => [id, row]));
    return this.points;
  }

  /** Replace the positions (e.g. after aligning to another map). x, y: Float32Array of the same length. */
  setPositions(x, y) {
    this.points.columns.x = x;
    this.points.columns.y = y;
  }

  async draw(colorKey) {
    const { x, y } = this.points.columns;
    const fresh = !this.div.data;
    const note = colorKey === "logdet" && !hasLogdet(this.points) ? " (flow layer off: no log|det J|)" : "";
    await drawMap(this.div, { x, y, marker: coloring(this.points, colorKey), title: this.title + note,
      xTitle: `${PROJECTIONS[this.points.projection] || this.points.projection} 1`,
      yTitle: `${PROJECTIONS[this.points.projection] || this.points.projection} 2` });
    if (fresh) this.listen();
    this.mark(this.marked);
  }

  listen() {
    onPoints(this.div, {
      hover: (row, mouse) => {
        const id = this.points.columns.image_id[row];
        showCard(thumbUrl(this.run.dataset_id, id), this.caption(row), mouse);
        this.handlers.hover.forEach((f) => f(id, mouse));
      },
      unhover: () => { hideCard(); this.handlers.unhover.forEach((f) => f()); },
      click: (row) => this.handlers.click.forEach((f) => f(this.points.columns.image_id[row])),
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

/** Projection / split / colouring selects; `onChange({proj|split|color: value})`. `noLogdet` disables that
 * colouring with the reason in its label. */
export function mapControls(state, onChange, { noLogdet = false, prefix = "map" } = {}) {
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
  return el("div", { class: "row" },
    select("proj", "Projection", PROJECTIONS),
    select("split", "Images", SPLITS),
    select("color", "Colour by", COLORINGS));
}

// The colours of a map's points. Up to 20 classes each class has its own palette colour; beyond that no
// palette keeps classes apart, so classes get hues by label (neighbouring labels far apart on the hue circle)
// and the classes that matter — those searched or picked (the map's `focus`) — are drawn in distinct palette
// colours over a grey rest. Continuous colourings (log|det J|, Lipschitz) use one colour scale.
import { classColor, markerFor } from "../plots.js";

export const CONTINUOUS = ["logdet", "lipschitz", "lipschitz_network"];
export const PALETTE_CLASSES = 20; // classColor's palette; more classes are drawn by hue
export const GREY = "#c9ced6";
const HUE_STEP = 137.508; // the golden angle: consecutive labels land far apart
const HUE_BINS = 24; // hues of a map past PALETTE_CLASSES classes: one single-colour trace each when grouped
const hueBin = (label) => Math.round(((label * HUE_STEP) % 360) / (360 / HUE_BINS)) % HUE_BINS;
const HUE_COLORS = Array.from({ length: HUE_BINS }, (_, i) => `hsl(${(i * 360) / HUE_BINS}, 55%, 50%)`);

/** The colour class `label` is drawn in on a map of `classCount` classes with `focus` (labels, in order). */
export function classColorOn(label, classCount, focus = []) {
  if (focus.length) {
    const i = focus.indexOf(label);
    if (i < 0) return GREY;
    return classCount <= PALETTE_CLASSES ? classColor(label) : classColor(i % PALETTE_CLASSES);
  }
  return classCount <= PALETTE_CLASSES ? classColor(label) : HUE_COLORS[hueBin(label)];
}

/** The classes present in `points` (label indices, ascending) and label → colour. A class's colour follows
 * its label in the dataset, never its rank among the classes shown, so switching the split (or comparing two
 * runs) keeps every class's colour. Linear in the points (no spread of a large array). */
export function classColors(points) {
  const seen = new Uint8Array(points.class_names.length);
  const labels = points.columns.label;
  for (let i = 0; i < labels.length; i += 1) seen[labels[i]] = 1;
  const present = [];
  for (let l = 0; l < seen.length; l += 1) if (seen[l]) present.push(l);
  return { present, color: new Map(present.map((label) => [label, classColor(label)])) };
}

/** A categorical colouring of the drawn points: {codes (a colour index per drawn point), colors, names, title},
 * or null for a continuous `key`. `take(column)` gathers a column's drawn rows; `focus` the highlighted classes. */
export function categories(points, key, { take, focus = [] }) {
  const c = points.columns;
  if (key === "correct") return { codes: take(c.correct_at_1), colors: ["#d62728", "#9bb7d4"], names: ["wrong", "right"], title: "correct@1" };
  if (key === "split") return { codes: take(c.split), colors: ["#9c755f", "#4e79a7"], names: ["train", "test"], title: "split" };
  if (key !== "class") return null;
  const names = points.class_names;
  const labels = take(c.label);
  if (!focus.length && names.length <= PALETTE_CLASSES) return { codes: labels, colors: names.map((_, i) => classColor(i)), names, title: "class" };
  if (!focus.length) return { codes: Uint8Array.from(labels, hueBin), colors: HUE_COLORS, names: HUE_COLORS, title: "class" };
  const slot = new Map(focus.map((label, i) => [label, i]));
  return { codes: Float32Array.from(labels, (l) => slot.get(l) ?? focus.length),
    colors: [...focus.map((l) => classColorOn(l, names.length, focus)), GREY], names: [...focus.map((l) => names[l]), "other"], title: "class" };
}

/** Marker options for colouring by `key` the drawn points: `take(column)` gathers a column's drawn rows;
 * `range` [cmin, cmax] fixes a continuous scale (compare); `focus` the highlighted classes. */
export function coloring(points, key, { take, range = null, focus = [], size = 5 }) {
  const groups = categories(points, key, { take, focus });
  if (groups) {
    const marker = markerFor({ kind: "category", values: groups.codes, labels: groups.names, colors: groups.colors, title: groups.title }, size);
    return key === "class" ? { ...marker, showscale: false } : marker;
  }
  const column = points.columns[key];
  if (!column || !column.some((v) => !Number.isNaN(v))) {
    // A run without a flow layer (logdet), or measured before the whole-network Lipschitz existed: an all-NaN
    // colour array breaks the colour bar. lipschitz_network is a seeded sample: Plotly draws the NaN rest grey.
    return { size, color: "#b8c0cc", opacity: 0.7, showscale: false };
  }
  const marker = markerFor({ kind: "continuous", values: take(column), title: key === "logdet" ? "log|det J|" : "Lipschitz" }, size);
  return range ? { ...marker, cmin: range[0], cmax: range[1] } : marker;
}

/** [min, max] of a continuous colouring over several maps (NaN skipped), so that one colour means one value
 * in all of them; null for a categorical colouring or when no map has a value. */
export function sharedRange(pointsList, key) {
  if (!CONTINUOUS.includes(key)) return null;
  let lo = Infinity;
  let hi = -Infinity;
  for (const points of pointsList) {
    for (const v of points.columns[key] || []) if (!Number.isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  return lo <= hi ? [lo, hi] : null;
}

// The colours of a map's points. Up to 20 classes each class has its own palette colour; beyond that no
// palette keeps classes apart, so classes get hues by label (neighbouring labels far apart on the hue circle)
// and the classes that matter — those searched or picked (the map's `focus`) — are drawn in distinct palette
// colours over a grey rest. Continuous colourings (log|det J|, Lipschitz) use one colour scale.
import { classColor, markerFor } from "../plots.js";

export const CONTINUOUS = ["logdet", "lipschitz", "lipschitz_network"];
export const PALETTE_CLASSES = 20; // classColor's palette; more classes are drawn by hue
export const GREY = "#c9ced6";
const HUE_STEP = 137.508; // the golden angle: consecutive labels land far apart
const hueOf = (label) => (label * HUE_STEP) % 360;
const HUES = Array.from({ length: 13 }, (_, i) => [i / 12, `hsl(${i * 30}, 55%, 50%)`]);

/** The colour class `label` is drawn in on a map of `classCount` classes with `focus` (labels, in order). */
export function classColorOn(label, classCount, focus = []) {
  if (focus.length) {
    const i = focus.indexOf(label);
    if (i < 0) return GREY;
    return classCount <= PALETTE_CLASSES ? classColor(label) : classColor(i % PALETTE_CLASSES);
  }
  return classCount <= PALETTE_CLASSES ? classColor(label) : `hsl(${hueOf(label)}, 55%, 50%)`;
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

/** Marker for class colouring of the drawn labels `labels` (typed array) with `focus` (labels). */
function classMarker(labels, classNames, focus, size) {
  const count = classNames.length;
  if (!focus.length && count <= PALETTE_CLASSES) {
    return { ...markerFor({ kind: "category", values: labels, labels: classNames,
      colors: classNames.map((_, i) => classColor(i)), title: "class" }, size), showscale: false };
  }
  if (!focus.length) {
    return { size, color: Float32Array.from(labels, hueOf), colorscale: HUES, cmin: 0, cmax: 360, showscale: false, opacity: 0.85 };
  }
  const slot = new Map(focus.map((label, i) => [label, i]));
  const codes = Float32Array.from(labels, (l) => slot.get(l) ?? focus.length);
  const colors = [...focus.map((l) => classColorOn(l, count, focus)), GREY];
  return { ...markerFor({ kind: "category", values: codes, labels: [...focus.map((l) => classNames[l]), "other"], colors,
    title: "class" }, size), showscale: false };
}

/** Marker options for colouring by `key` the drawn points: `take(column)` gathers a column's drawn rows;
 * `range` [cmin, cmax] fixes a continuous scale (compare); `focus` the highlighted classes. */
export function coloring(points, key, { take, range = null, focus = [], size = 5 }) {
  const c = points.columns;
  if (key === "class") return classMarker(take(c.label), points.class_names, focus, size);
  if (key === "correct") {
    return markerFor({ kind: "category", values: take(c.correct_at_1), labels: ["wrong", "right"],
      colors: ["#d62728", "#9bb7d4"], title: "correct@1" }, size);
  }
  if (key === "split") {
    return markerFor({ kind: "category", values: take(c.split), labels: ["train", "test"], colors: ["#9c755f", "#4e79a7"], title: "split" }, size);
  }
  const column = c[key];
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

// What a map draws when it has more points than a browser can scatter quickly: a seeded sample stratified by
// class (every class keeps a few points, so small classes stay visible) over a 2-D histogram of ALL points.
// Pure functions over typed arrays, linear in the number of points (tests/js runs them under node).

export const DRAW_LIMIT = 100_000; // points scattered at most (Plotly colours ~10 µs a point); beyond, a sample over the density
export const SAMPLE_SIZE = 50_000; // points of that sample: 3 of each of SOP's 11 318 classes and as many again
const FLOOR = 3; // points every class keeps in a sample (all of a smaller class), while the limit allows

/** A seeded 32-bit generator (mulberry32): the same seed draws the same sample on every load. */
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rows (ascending Int32Array) of a sample of about `limit` rows, or null when every row fits. Each class c
 * of n_c rows keeps min(n_c, m) rows — m = 3, fewer when 3 per class would exceed `limit`, never under 1 —
 * plus the same fraction f of the rest, f chosen so that the total is `limit` (more only when one per class
 * alone exceeds it); rows are drawn by a seeded shuffle. `keep(row)` false leaves a row out (filtered classes). */
export function stratifiedSample(labels, limit, { seed = 0, keep = null } = {}) {
  const n = labels.length;
  let classes = 0;
  for (let i = 0; i < n; i += 1) if (labels[i] >= classes) classes = labels[i] + 1;
  const counts = new Int32Array(classes);
  let total = 0;
  for (let i = 0; i < n; i += 1) if (!keep || keep(i)) { counts[labels[i]] += 1; total += 1; }
  if (total <= limit) return null;
  let present = 0;
  for (let c = 0; c < classes; c += 1) if (counts[c]) present += 1;
  const least = Math.max(1, Math.min(FLOOR, Math.floor(limit / present)));
  let floors = 0;
  for (let c = 0; c < classes; c += 1) floors += Math.min(counts[c], least);
  const fraction = Math.max(0, limit - floors) / (total - floors);
  const quota = new Int32Array(classes);
  for (let c = 0; c < classes; c += 1) {
    const floor = Math.min(counts[c], least);
    quota[c] = floor + Math.floor((counts[c] - floor) * fraction);
  }
  const order = new Int32Array(n);
  for (let i = 0; i < n; i += 1) order[i] = i;
  const random = generator(seed);
  const chosen = new Uint8Array(n);
  let size = 0;
  for (let i = n - 1; i >= 0; i -= 1) { // Fisher–Yates, taking each row as it is drawn
    const j = Math.floor(random() * (i + 1));
    const row = order[j];
    order[j] = order[i];
    if ((!keep || keep(row)) && quota[labels[row]] > 0) {
      quota[labels[row]] -= 1;
      chosen[row] = 1;
      size += 1;
    }
  }
  const rows = new Int32Array(size);
  for (let i = 0, k = 0; i < n; i += 1) if (chosen[i]) rows[k++] = i;
  return rows;
}

/** A bins × bins histogram of the points (x[i], y[i]) with keep(i) (all when null), over their bounding box:
 * {z: rows of log(1 + count) (null where empty, drawn transparent), x0, dx, y0, dy} for a Plotly heatmap. */
export function densityGrid(x, y, bins = 200, keep = null) {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < x.length; i += 1) {
    if ((keep && !keep(i)) || Number.isNaN(x[i]) || Number.isNaN(y[i])) continue;
    if (x[i] < x0) x0 = x[i];
    if (x[i] > x1) x1 = x[i];
    if (y[i] < y0) y0 = y[i];
    if (y[i] > y1) y1 = y[i];
  }
  if (!(x0 <= x1)) return null;
  const dx = (x1 - x0 || 1) / bins;
  const dy = (y1 - y0 || 1) / bins;
  const counts = new Float64Array(bins * bins);
  for (let i = 0; i < x.length; i += 1) {
    if ((keep && !keep(i)) || Number.isNaN(x[i]) || Number.isNaN(y[i])) continue;
    const col = Math.min(bins - 1, Math.floor((x[i] - x0) / dx));
    const row = Math.min(bins - 1, Math.floor((y[i] - y0) / dy));
    counts[row * bins + col] += 1;
  }
  const z = [];
  for (let r = 0; r < bins; r += 1) {
    const line = new Array(bins);
    for (let c = 0; c < bins; c += 1) line[c] = counts[r * bins + c] ? Math.log1p(counts[r * bins + c]) : null;
    z.push(line);
  }
  return { z, x0: x0 + dx / 2, dx, y0: y0 + dy / 2, dy, counts };
}

/** Rows i with keep(i) inside a Plotly selection event's box (`range`: {x: [x0, x1], y: [y0, y1]}) or lasso
 * (`lassoPoints`: {x: [...], y: [...]}, even–odd rule), over all points, drawn or not. */
export function selectRows(x, y, { range = null, lassoPoints = null }, keep = null) {
  const out = [];
  if (range) {
    const [x0, x1] = [Math.min(...range.x), Math.max(...range.x)];
    const [y0, y1] = [Math.min(...range.y), Math.max(...range.y)];
    for (let i = 0; i < x.length; i += 1) {
      if (x[i] >= x0 && x[i] <= x1 && y[i] >= y0 && y[i] <= y1 && (!keep || keep(i))) out.push(i);
    }
    return out;
  }
  const px = lassoPoints.x;
  const py = lassoPoints.y;
  for (let i = 0; i < x.length; i += 1) {
    let inside = false;
    for (let a = 0, b = px.length - 1; a < px.length; b = a, a += 1) {
      if ((py[a] > y[i]) !== (py[b] > y[i]) && x[i] < ((px[b] - px[a]) * (y[i] - py[a])) / (py[b] - py[a]) + px[a]) inside = !inside;
    }
    if (inside && (!keep || keep(i))) out.push(i);
  }
  return out;
}

/** `rows` (the drawn rows, `codes[i]` the colour code of rows[i]) reordered code by code in the drawing `order`
 * (codes; each code's rows keep their order), and the groups [{start, end, code}] of positions of one code, empty
 * codes left out: a map draws each group as one single-colour trace. Linear (a counting sort). */
export function groupRows(rows, codes, order) {
  const counts = new Int32Array(order.length);
  for (let i = 0; i < codes.length; i += 1) counts[codes[i]] += 1;
  const next = new Int32Array(order.length);
  const groups = [];
  let at = 0;
  for (const code of order) {
    next[code] = at;
    if (counts[code]) groups.push({ start: at, end: at + counts[code], code });
    at += counts[code];
  }
  const out = new Int32Array(rows.length);
  for (let i = 0; i < codes.length; i += 1) out[next[codes[i]]++] = rows[i];
  return [out, groups];
}

// What a map of more points than it scatters draws (frontend/js/explore/sample.js): the stratified sample keeps
// every class and the limit, the density grid counts every point once, box and lasso selections match a
// brute-force check of each point; grouping rows by colour is a stable reordering.
import assert from "node:assert/strict";
import { test } from "node:test";

import { densityGrid, groupRows, selectRows, stratifiedSample } from "../../frontend/js/explore/sample.js";

/** Labels of `sizes[c]` rows per class c, interleaved by a fixed permutation. */
function labelsOf(sizes) {
  const labels = sizes.flatMap((n, c) => Array(n).fill(c));
  for (let i = labels.length - 1, s = 7; i > 0; i -= 1) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [labels[i], labels[j]] = [labels[j], labels[i]];
  }
  return Int32Array.from(labels);
}

const perClass = (labels, rows) => rows.reduce((m, r) => m.set(labels[r], (m.get(labels[r]) || 0) + 1), new Map());

test("no sample when every row fits", () => {
  assert.equal(stratifiedSample(labelsOf([5, 5]), 10), null);
});

test("a sample keeps the limit, every class, and big classes in proportion", () => {
  const sizes = [20_000, 5_000, ...Array(300).fill(2), 1];
  const labels = labelsOf(sizes);
  const rows = stratifiedSample(labels, 5_000);
  assert.ok(rows.length <= 5_000 && rows.length > 4_900, `${rows.length}`);
  assert.ok(rows.every((r, i) => i === 0 || r > rows[i - 1]), "ascending, no repeats");
  const counts = perClass(labels, Array.from(rows));
  sizes.forEach((n, c) => assert.ok((counts.get(c) || 0) >= Math.min(n, 3), `class ${c}: ${counts.get(c)} of ${n}`));
  const [a, b] = [counts.get(0) / 20_000, counts.get(1) / 5_000];
  assert.ok(Math.abs(a - b) < 0.01, `fractions ${a} vs ${b}`);
  assert.deepEqual(stratifiedSample(labels, 5_000), rows, "seeded: the same sample on every call");
  assert.notDeepEqual(stratifiedSample(labels, 5_000, { seed: 1 }), rows);
});

test("more classes than the limit: one row of every class", () => {
  const labels = labelsOf(Array(2_000).fill(4));
  const rows = stratifiedSample(labels, 1_000);
  assert.equal(rows.length, 2_000);
  assert.equal(perClass(labels, Array.from(rows)).size, 2_000);
});

test("kept rows only", () => {
  const labels = labelsOf([3_000, 3_000]);
  const rows = stratifiedSample(labels, 1_000, { keep: (i) => labels[i] === 1 });
  assert.ok(rows.length === 1_000 && Array.from(rows).every((r) => labels[r] === 1));
});

test("the density grid counts each finite, kept point in its cell", () => {
  const x = Float32Array.from([0, 1, 1, 0.5, NaN, 0.26]);
  const y = Float32Array.from([0, 1, 0, 0.5, 0.2, 0.74]);
  const grid = densityGrid(x, y, 4, (i) => i !== 3);
  assert.equal(grid.counts.reduce((s, v) => s + v, 0), 4);
  const cell = (r, c) => grid.counts[r * 4 + c];
  assert.deepEqual([cell(0, 0), cell(3, 3), cell(0, 3), cell(2, 1)], [1, 1, 1, 1]);  // the box's edges are inside
  assert.equal(grid.z[0][0], Math.log1p(1));
  assert.equal(grid.z[1][1], null);  // empty cells are transparent
  assert.equal(densityGrid(new Float32Array([NaN]), new Float32Array([NaN])), null);
});

test("box and lasso select the points inside, drawn or not", () => {
  const n = 2_000;
  const x = Float32Array.from({ length: n }, (_, i) => ((i * 37) % 101) / 100);
  const y = Float32Array.from({ length: n }, (_, i) => ((i * 53) % 97) / 96);
  const box = selectRows(x, y, { range: { x: [0.6, 0.2], y: [0.1, 0.5] } });
  assert.deepEqual(box, [...Array(n).keys()].filter((i) => x[i] >= 0.2 && x[i] <= 0.6 && y[i] >= 0.1 && y[i] <= 0.5));
  const triangle = { x: [0, 1, 0], y: [0, 0, 1] };  // below the line x + y = 1
  const inside = selectRows(x, y, { lassoPoints: triangle }, (i) => i % 2 === 0);
  const strictly = [...Array(n).keys()].filter((i) => i % 2 === 0 && x[i] > 0 && y[i] > 0 && x[i] + y[i] < 0.999);
  assert.ok(strictly.every((i) => inside.includes(i)));
  assert.ok(inside.every((i) => i % 2 === 0 && x[i] + y[i] <= 1.001));
});

test("grouping by colour: a stable permutation in the drawing order, each group one code", () => {
  const rows = Int32Array.from([40, 11, 7, 93, 5, 60, 2]);
  const codes = Uint8Array.from([2, 0, 2, 1, 0, 2, 0]);
  const [out, groups] = groupRows(rows, codes, [2, 3, 0, 1]);  // code 3 has no rows: no group
  assert.deepEqual(Array.from(out), [40, 7, 60, 11, 5, 2, 93]);
  assert.deepEqual(groups, [{ start: 0, end: 3, code: 2 }, { start: 3, end: 6, code: 0 }, { start: 6, end: 7, code: 1 }]);
  for (const { start, end, code } of groups) {
    for (let p = start; p < end; p += 1) assert.equal(codes[Array.from(rows).indexOf(out[p])], code);
  }
});

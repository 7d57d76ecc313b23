// The binary /points body decoded by the UI (frontend/js/api.js decodePoints) against the JSON body of the same
// request, by the contract of docs/api.md: integer columns exact, float columns within half a quantisation step
// of their range, NaN where JSON has null, a column without any value listed in `absent`. The bodies come from
// a real server: tests/api/test_points_decoding.py writes `<case>.bin` (gzip already undone, as a browser does)
// and `<case>.json` into the folder named by DMLSCOPE_POINTS_CASES and runs this file.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { decodePoints } from "../../frontend/js/api.js";

const STEPS = 65534; // finite codes 0 … 65534 over [lo, hi] (docs/api.md)
const folder = process.env.DMLSCOPE_POINTS_CASES;
const cases = folder ? readdirSync(folder).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)) : [];

test("server-produced bodies are given", { skip: folder ? false : "run through pytest tests/api/test_points_decoding.py" }, () => {
  assert.ok(cases.length > 0, `no <case>.json in ${folder}`);
});

function agree(column, got, want) {
  const finite = want.filter((v) => v !== null);
  const integral = finite.every(Number.isInteger) && !want.includes(null);
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  // half a step, plus float32 rounding of the decoded value
  const tolerance = integral ? 0 : (hi - lo) / STEPS / 2 + 2 ** -22 * Math.max(Math.abs(lo), Math.abs(hi));
  want.forEach((v, i) => {
    if (v === null) assert.ok(Number.isNaN(got[i]), `${column}[${i}]: ${got[i]} should be NaN`);
    else assert.ok(Math.abs(got[i] - v) <= tolerance, `${column}[${i}]: ${got[i]} vs ${v} (± ${tolerance})`);
  });
}

for (const name of cases) {
  test(`binary and JSON bodies agree: ${name}`, () => {
    const json = JSON.parse(readFileSync(join(folder, `${name}.json`), "utf8"));
    const file = readFileSync(join(folder, `${name}.bin`));
    const decoded = decodePoints(file.buffer.slice(file.byteOffset, file.byteOffset + file.byteLength));
    const { columns: jsonColumns, ...jsonHeader } = json;
    for (const [key, value] of Object.entries(jsonHeader)) assert.deepEqual(decoded[key], value, key);
    const empty = Object.keys(jsonColumns).filter((c) => (jsonColumns[c] ?? []).every((v) => v === null));
    assert.deepEqual([...decoded.absent].sort(), empty.sort(), "absent columns");
    const present = Object.keys(jsonColumns).filter((c) => !empty.includes(c));
    assert.deepEqual(Object.keys(decoded.columns).sort(), present.sort(), "decoded columns");
    for (const column of present) {
      assert.equal(decoded.columns[column].length, json.count, column);
      agree(column, decoded.columns[column], jsonColumns[column]);
    }
  });
}

// Class pairs as a heat map (GET /api/runs/{id}/class-pairs): the gap matrix (smallest distance between two
// classes' images, SPEC §3.3) or the k-NN confusion counts, classes ordered by a clustering so that classes
// that touch sit side by side. Clicking a cell shows the two classes' images on the map.
import { api } from "../api.js";
import { el, empty, errorBox, fill, shortName } from "../dom.js";
import { downloadPng, layout, purge, react } from "../plots.js";

/** Returns {node, load(split)}; `onPick(classNames)` is called with the row and column class of a cell;
 * `classCount()` says how many classes the map shows (past the server's `max_pair_classes`, GET /api/health,
 * no matrix is asked for: the server would refuse it). */
export function pairsPanel(run, { onPick, classCount = () => 0 }, cleanups) {
  const div = el("div", { class: "plot", id: "class-pairs", role: "img", "aria-label": "class-pair heat map" });
  const what = el("select", { id: "pairs-what" },
    el("option", { value: "gap" }, "gap: smallest distance between the two classes"),
    el("option", { value: "confusion" }, "confusion: k-NN neighbours of the row class in the column class"));
  const status = el("div");
  let answer = null;
  cleanups.push(() => purge(div));
  what.addEventListener("change", () => answer && draw());

  async function load(mapSplit) {
    const split = mapSplit === "train" ? "train" : "test";
    let limit;
    try {
      limit = (await api.health()).max_pair_classes;
    } catch (err) {
      fill(status, errorBox(err, "No class pairs"));
      return;
    }
    if (classCount() > limit) {
      answer = null;
      purge(div);
      fill(status, empty(`${classCount().toLocaleString("en-US")} classes: a class-pair matrix is drawn up to ${limit} classes.`,
        el("p", {}, "Find the closest classes in the per-class table (nearest class, margin) and pick one to see it on the map.")));
      return;
    }
    fill(status, el("p", { class: "state loading" }, `Measuring the ${split} class pairs…`));
    try {
      answer = await api.classPairs(run.id, split);
    } catch (err) {
      fill(status, errorBox(err, "No class pairs"));
      return;
    }
    fill(status, answer.classes.length < 2 ? empty("One class only: no pairs.") : null);
    if (answer.classes.length >= 2) draw();
  }

  function draw() {
    const gap = what.value === "gap";
    const names = answer.classes;
    // Confusion: off-diagonal counts only (the diagonal, the right neighbours, would swamp the scale).
    const z = gap ? answer.gap : answer.confusion.map((row, i) => row.map((v, j) => (i === j ? null : v)));
    react(div, [{
      type: "heatmap", z, x: names.map(shortName), y: names.map(shortName), customdata: names.map((r) => names.map((c) => [r, c])),
      colorscale: gap ? "Viridis" : "Reds", hoverongaps: false,
      colorbar: { title: { text: gap ? "gap" : "count" }, thickness: 12 },
      hovertemplate: `%{customdata[0]} ↔ %{customdata[1]}: ${gap ? "gap %{z:.3f}" : "%{z} of k neighbours"}<extra></extra>`,
    }], layout(null, {
      xaxis: { type: "category", tickangle: -45, automargin: true }, yaxis: { type: "category", autorange: "reversed", automargin: true },
      margin: { l: 56, r: 16, t: 12, b: 44 },
    }));
    div.removeAllListeners?.("plotly_click");
    div.on("plotly_click", (ev) => {
      const [row, col] = ev.points[0].customdata;
      onPick(row === col ? [row] : [row, col]);
    });
  }

  const node = el("section", { class: "panel", id: "pairs-panel", "aria-labelledby": "pairs-h" },
    el("header", {}, el("h2", { id: "pairs-h" }, "Class pairs"),
      el("div", { class: "actions" }, el("label", { for: "pairs-what" }, "Show", what),
        el("button", { type: "button", onclick: () => downloadPng(div, `dmlscope-${run.id}-class-pairs`) }, "Download PNG"))),
    el("p", { class: "help" }, "Classes ordered by a clustering of the gaps; dark cells of the gap map touch. Click a cell to see the two classes on the map."),
    status, div);
  return { node, load };
}

/** Compare: the class-pair matrices of B minus A on the test classes, aligned by class name in A's clustered
 * order. The k-NN confusion counts always compare; the gaps only when both runs use one distance. */
export function pairsDiffPanel(a, b, cleanups) {
  const div = el("div", { class: "plot", id: "class-pairs-diff", role: "img", "aria-label": "class-pair differences B − A" });
  const status = el("div", {}, el("p", { class: "state loading" }, "Measuring the class pairs of both runs…"));
  const sameUnits = a.config.distance.name === b.config.distance.name;
  const what = el("select", { id: "pairs-diff-what" },
    el("option", { value: "confusion" }, "k-NN confusion: B − A"),
    el("option", { value: "gap", disabled: !sameUnits }, sameUnits ? "gap: B − A" : "gap: B − A (different distances: not comparable)"));
  let answers = null;
  cleanups.push(() => purge(div));
  const draw = () => {
    const [pa, pb] = answers;
    const names = pa.classes.filter((n) => pb.classes.includes(n));
    const at = (p, key, r, c) => p[key][p.classes.indexOf(r)][p.classes.indexOf(c)];
    const z = names.map((r) => names.map((c) => {
      if (r === c) return null;
      const [x, y] = [at(pa, what.value, r, c), at(pb, what.value, r, c)];
      return x === null || y === null ? null : y - x;
    }));
    const top = Math.max(1e-12, ...z.flat().filter((v) => v !== null).map(Math.abs));
    react(div, [{ type: "heatmap", z, x: names.map(shortName), y: names.map(shortName), zmid: 0, zmin: -top, zmax: top,
      colorscale: "RdBu", reversescale: what.value === "gap", hoverongaps: false, // Plotly RdBu: low blue, high red
      customdata: names.map((r) => names.map((c) => [r, c])), colorbar: { title: { text: "B − A" }, thickness: 12 },
      hovertemplate: "%{customdata[0]} ↔ %{customdata[1]}: %{z}<extra></extra>" }],
    layout(null, { xaxis: { type: "category", tickangle: -45, automargin: true },
      yaxis: { type: "category", autorange: "reversed", automargin: true }, margin: { l: 56, r: 16, t: 12, b: 44 } }));
  };
  what.addEventListener("change", () => answers && draw());
  Promise.all([api.classPairs(a.id, "test"), api.classPairs(b.id, "test")]).then((found) => {
    answers = found;
    fill(status);
    draw();
  }).catch((err) => fill(status, errorBox(err, "No class pairs")));
  return el("section", { class: "panel", id: "pairs-diff-panel", "aria-labelledby": "pairs-diff-h" },
    el("header", {}, el("h2", { id: "pairs-diff-h" }, "Class pairs: B − A"),
      el("div", { class: "actions" }, el("label", { for: "pairs-diff-what" }, "Show", what))),
    el("p", { class: "help" }, "Test classes in A's clustered order. Confusion: red = B confuses the pair more. Gap: blue = B separates it more."),
    status, div);
}

// The selection panel: what a lasso / box / shift-click selection on the map holds (size, class make-up, a
// grid of its images) and how it sits against the rest of the split (POST /api/runs/{id}/selection).
import { api } from "../api.js";
import { el, empty, errorBox, fill, fixed } from "../dom.js";
import { thumbUrl } from "./map.js";

const GRID = 60; // thumbnails shown at most

const ROWS = [
  ["correct_at_1", "correct@1 (nearest neighbour of the same class)"],
  ["radius_mean", "radius: mean distance to its centre"],
  ["lipschitz", "local Lipschitz estimate (mean)"],
  ["logdet", "log|det J| (mean)"],
];

/** Returns {node, show(imageIds, split)}; `onClear()` empties the map's selection, `onPick(id)` opens an image;
 * `id` prefixes the element ids and `title` heads the panel (compare has one per run). */
export function selectionPanel(run, { onClear, onPick, id = "selection", title = "Selection" }) {
  const body = el("div", { "aria-live": "polite" });
  const node = el("section", { class: "panel", id: `${id}-panel`, "aria-labelledby": `${id}-h`, hidden: true },
    el("header", {}, el("h2", { id: `${id}-h` }, title),
      el("span", { class: "help" }, "box or lasso on the map (toolbar), shift-click to add or remove one image"),
      el("div", { class: "actions" }, el("button", { type: "button", onclick: () => onClear() }, "Clear selection"))),
    body);
  let asked = 0;

  async function show(imageIds, split) {
    node.hidden = !imageIds.length;
    if (!imageIds.length) return;
    const ticket = ++asked;
    fill(body, el("p", { class: "state loading" }, `Measuring ${imageIds.length} selected images…`));
    try {
      const s = await api.selection(run.id, imageIds, split === "all" ? undefined : split);
      if (ticket !== asked) return;
      fill(body, summary(s), grid(imageIds));
    } catch (err) {
      if (ticket === asked) fill(body, errorBox(err, "No statistics for this selection"));
    }
  }

  function summary(s) {
    const pct = (v) => (typeof v === "number" ? `${fixed(100 * v, 1)} %` : "—");
    return el("div", { class: "grid-2" },
      el("div", {},
        el("p", {}, el("strong", { id: `${id}-size` }, `${s.size} images`), ` of ${s.size + s.rest_size} (${s.split}); `,
          `${pct(s.knn_inside)} of their 10 nearest neighbours are selected too (random: ${pct(s.expected)}).`),
        el("table", { id: `${id}-classes` }, el("thead", {}, el("tr", {}, el("th", {}, "class"),
          el("th", { class: "num" }, "selected"), el("th", { class: "num" }, "of the class"))),
        el("tbody", {}, s.classes.map((c) => el("tr", {}, el("td", { class: "clip", title: c.class }, c.class),
          el("td", { class: "num" }, c.count), el("td", { class: "num" }, pct(c.count / c.total))))))),
      el("table", { id: `${id}-stats` }, el("thead", {}, el("tr", {}, el("th", {}, ""),
        el("th", { class: "num" }, "selection"), el("th", { class: "num" }, "rest"))),
      el("tbody", {}, ROWS.filter(([key]) => s[key]?.selection !== null && s[key]?.selection !== undefined)
        .map(([key, label]) => el("tr", {}, el("td", {}, label),
          el("td", { class: "num" }, key === "correct_at_1" ? pct(s[key].selection) : fixed(s[key].selection)),
          el("td", { class: "num" }, key === "correct_at_1" ? pct(s[key].rest) : fixed(s[key].rest)))),
      el("tr", {}, el("td", {}, "mean distance to the nearest unselected image"), el("td", { class: "num" }, fixed(s.nearest_rest_mean)),
        el("td", { class: "num" }, "")))));
  }

  function grid(imageIds) {
    const shown = imageIds.slice(0, GRID);
    return el("div", {},
      el("div", { class: "gallery", id: `${id}-grid` }, shown.map((image) => el("button", { type: "button", class: "plain",
        title: `image #${image}: show its neighbours`, onclick: () => onPick(image) },
      el("img", { src: thumbUrl(run.dataset_id, image), alt: `image #${image}`, loading: "lazy" })))),
      imageIds.length > GRID ? el("p", { class: "small muted" }, `first ${GRID} of ${imageIds.length} shown`) : null);
  }

  fill(body, empty("Nothing selected."));
  return { node, show };
}

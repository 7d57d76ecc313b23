// The failure browser: the images whose nearest neighbour has another class, worst first — by margin (d to
// the nearest other class − d to the farthest class mate), by local Lipschitz or by log|det J| — each with
// its nearest neighbours marked right / wrong (GET /api/runs/{id}/failures).
import { api } from "../api.js";
import { el, empty, errorBox, fill, fixed } from "../dom.js";

const SORTS = { margin: "margin (most negative first)", lipschitz: "local Lipschitz (largest first)", logdet: "log|det J| (largest first)" };

// Its figures are classed f-query / f-right / f-wrong: the retrieval gallery's own query / right / wrong
// figures stay the only ones on the page.

/** Returns {node, load(split)}; `onPick(imageId)` opens an image (neighbours, ring on the map). */
export function failurePanel(run, { noLogdet, onPick }) {
  const sort = el("select", { id: "failures-sort" }, Object.entries(SORTS).map(([value, text]) =>
    el("option", { value, disabled: value === "logdet" && noLogdet }, value === "logdet" && noLogdet ? `${text}: flow layer off` : text)));
  const body = el("div", { "aria-live": "polite" });
  let split = "test";
  sort.addEventListener("change", () => load(split));

  async function load(mapSplit) {
    split = mapSplit === "train" ? "train" : "test";
    fill(body, el("p", { class: "state loading" }, `Finding the failures among the ${split} images…`));
    try {
      const answer = await api.failures(run.id, split, sort.value);
      fill(body, answer.failures.length ? table(answer) : empty(`No failure: every ${split} image's nearest neighbour has its class.`));
    } catch (err) {
      fill(body, errorBox(err, "No failures"));
    }
  }

  function thumb(image, verdict) {
    return el("button", { type: "button", class: "plain", title: `#${image.image_id} (${image.class}): show its neighbours`,
      onclick: () => onPick(image.image_id) },
    el("figure", { class: `f-${verdict}` }, el("img", { src: image.thumb_url, alt: `${image.class} #${image.image_id}`, loading: "lazy" }),
      el("figcaption", { class: "clip", title: image.class }, `${verdict === "right" ? "✓" : verdict === "wrong" ? "✗" : ""} ${image.class}`),
      image.distance !== undefined ? el("figcaption", { class: "muted" }, `d = ${fixed(image.distance)}`) : null));
  }

  function table(answer) {
    return el("div", {},
      el("p", { class: "small" }, `${answer.count} of ${answer.total} ${answer.split} images have a nearest neighbour of another class`,
        answer.count > answer.failures.length ? ` (the worst ${answer.failures.length} shown)` : "", "."),
      el("div", { class: "table-scroll" }, el("table", { id: "failures" },
        el("thead", {}, el("tr", {}, el("th", {}, "image"), el("th", { class: "num" }, "margin"),
          el("th", { class: "num" }, "Lipschitz"), el("th", { class: "num" }, "log|det J|"), el("th", {}, "nearest neighbours"))),
        el("tbody", {}, answer.failures.map((f) => el("tr", { "data-image": f.image_id },
          el("td", { class: "gallery" }, thumb(f, "query")),
          el("td", { class: "num", title: `nearest other class ${fixed(f.nearest_other)} − farthest class mate ${fixed(f.farthest_mate)}` }, fixed(f.margin)),
          el("td", { class: "num" }, fixed(f.lipschitz)), el("td", { class: "num" }, fixed(f.logdet)),
          el("td", {}, el("div", { class: "gallery" }, f.neighbors.map((n) => thumb(n, n.correct ? "right" : "wrong"))))))))));
  }

  const node = el("section", { class: "panel", id: "failures-panel", "aria-labelledby": "failures-h" },
    el("header", {}, el("h2", { id: "failures-h" }, "Failures"),
      el("span", { class: "help" }, "images whose nearest neighbour has another class"),
      el("div", { class: "actions" }, el("label", { for: "failures-sort" }, "Sort by", sort))),
    body);
  return { node, load };
}

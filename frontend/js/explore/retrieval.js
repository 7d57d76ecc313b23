// Retrieval: the k nearest neighbours of an image (a clicked point, or an uploaded query image) as a gallery
// with distances under the run's own distance and each neighbour marked right or wrong.
import { api } from "../api.js";
import { el, empty, errorBox, fill, fmt } from "../dom.js";

/** A gallery of one neighbours answer. `onPick(imageId)` makes a neighbour the next query. */
export function gallery(answer, onPick, caption = "") {
  const q = answer.query;
  const figure = (cls, img, lines, imageId) => {
    const fig = el("figure", { class: cls }, img, el("figcaption", {}, lines[0]), el("figcaption", { class: "muted" }, lines[1]));
    return imageId === null || imageId === undefined || !onPick ? fig
      : el("button", { type: "button", class: "plain", title: `use #${imageId} as the query`, onclick: () => onPick(imageId) }, fig);
  };
  return el("div", {},
    caption ? el("p", { class: "small muted" }, caption) : null,
    el("div", { class: "gallery", role: "list" },
      figure("query", el("img", { src: q.thumb_url || q.data_url, alt: `query ${q.class ?? ""}` }),
        ["query", q.class ? `${q.class}${q.image_id !== null && q.image_id !== undefined ? ` #${q.image_id}` : ""}` : "uploaded"], null),
      answer.neighbors.map((n) => {
        const verdict = n.correct === true ? "right" : n.correct === false ? "wrong" : "";
        const mark = n.correct === true ? "✓" : n.correct === false ? "✗" : "";
        return figure(verdict, el("img", { src: n.thumb_url, alt: `rank ${n.rank}: ${n.class} (${verdict || "unknown"})` }),
          [`${mark} ${n.rank}. ${n.class}`, `d = ${fmt(n.distance, 3)}`], n.image_id);
      })));
}

/** The retrieval panel of a run page. `onQuery(imageId)` is told each dataset image asked about (to keep it
 * in the URL); `onResult(answer)` lets the map ring the query and its neighbours. */
export function retrievalPanel(run, classNames, { split = "test", onQuery, onResult }) {
  const k = el("select", { id: "knn-k" }, [5, 10, 20].map((v) => el("option", { value: v, selected: v === 10 }, v)));
  // The uploaded image is searched among the images of one split: by default the map's (test for "both").
  const within = el("select", { id: "query-within" },
    el("option", { value: "test" }, "test images (unseen classes)"), el("option", { value: "train" }, "train images (seen classes)"));
  const setSplit = (mapSplit) => { within.value = mapSplit === "train" ? "train" : "test"; };
  setSplit(split);
  const out = el("div", { "aria-live": "polite" }, empty("Click a point on the map, or upload a query image."));
  let lastQuery = null;

  async function show(imageId) {
    lastQuery = imageId;
    onQuery(imageId);
    fill(out, el("p", { class: "state loading" }, `Finding the ${k.value} nearest neighbours of #${imageId}…`));
    try {
      const answer = await api.neighbors(run.id, imageId, Number(k.value));
      fill(out, gallery(answer, show, `Nearest neighbours among the ${answer.query.split} images, under ${run.config.distance.name}.`));
      onResult(answer);
    } catch (err) {
      fill(out, errorBox(err, "No neighbours"));
    }
  }
  k.addEventListener("change", () => lastQuery !== null && show(lastQuery));

  const file = el("input", { type: "file", id: "query-file", accept: "image/*" });
  const cls = el("select", { id: "query-class" }, el("option", { value: "" }, "(unknown)"),
    classNames.map((c) => el("option", { value: c }, c)));
  const upload = el("form", { class: "row", onsubmit: async (ev) => {
    ev.preventDefault();
    if (!file.files[0]) { fill(out, errorBox({ error: "Choose an image file first" })); return; }
    const form = new FormData();
    form.append("file", file.files[0]);
    form.append("k", k.value);
    form.append("within", within.value);
    if (cls.value) form.append("class_name", cls.value);
    fill(out, el("p", { class: "state loading" }, "Embedding the uploaded image…"));
    try {
      const answer = await api.query(run.id, form);
      answer.query.data_url = URL.createObjectURL(file.files[0]);
      fill(out, gallery(answer, show, `Nearest neighbours of the uploaded image among the ${within.value} images.`));
      onResult(answer);
    } catch (err) {
      fill(out, errorBox(err, "Query failed"));
    }
  } },
  el("label", { for: "query-file" }, "or upload a query image", file),
  el("label", { for: "query-class" }, "of class", cls),
  el("label", { for: "query-within" }, "among the", within),
  el("button", { type: "submit" }, "Search"));

  // The keyboard's way to pick an image (the map itself takes a mouse).
  const imageId = el("input", { type: "number", id: "query-id", min: 0, step: 1, placeholder: "image #" });
  const byId = el("form", { class: "row", onsubmit: (ev) => {
    ev.preventDefault();
    if (imageId.value !== "") show(Number(imageId.value));
  } }, el("label", { for: "query-id" }, "Image number", imageId), el("button", { type: "submit" }, "Show neighbours"));

  const node = el("section", { class: "panel", "aria-labelledby": "retrieval-h" },
    el("header", {}, el("h2", { id: "retrieval-h" }, "Nearest neighbours"),
      el("div", { class: "actions" }, el("label", { for: "knn-k" }, "k", k))),
    el("div", { class: "query-forms" }, byId, upload), out);
  return { node, show, setSplit };
}

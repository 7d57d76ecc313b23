// "Import embeddings" (Runs tab): an .npz/.npy of vectors + labels becomes a run measured without a model
// (POST /api/embeddings); on success the page opens the new run, which shows its progress, then its map.
import { api } from "../api.js";
import { el, errorBox, fill } from "../dom.js";
import { navigate } from "../url.js";

const DISTANCES = ["euclidean", "cosine", "squared_euclidean", "snr"]; // those that need no training

export function embeddingsPanel() {
  const file = el("input", { id: "emb-file", type: "file", accept: ".npz,.npy", required: true });
  const name = el("input", { id: "emb-name", type: "text", placeholder: "(file name)", maxlength: 200 });
  const dataset = el("select", { id: "emb-dataset" }, el("option", { value: "" }, "none (labels only, no thumbnails)"));
  const distance = el("select", { id: "emb-distance" }, DISTANCES.map((d) => el("option", { value: d }, d)));
  const status = el("div", { role: "status" });
  api.datasets().then(({ data }) => dataset.append(...data.filter((d) => d.has_images !== false)
    .map((d) => el("option", { value: d.id }, d.name)))).catch(() => {});

  async function submit(ev) {
    ev.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const form = new FormData();
    form.append("file", chosen, chosen.name);
    form.append("name", name.value.trim() || chosen.name);
    if (dataset.value) form.append("dataset_id", dataset.value);
    form.append("distance", distance.value);
    fill(status, el("p", { class: "state loading" }, `Checking ${chosen.name}…`));
    try {
      const run = await api.importEmbeddings(form);
      navigate({ run: run.id });
    } catch (err) {
      fill(status, errorBox(err, "Embeddings rejected"));
    }
  }
  return el("details", { class: "panel", id: "import-embeddings" },
    el("summary", {}, el("strong", {}, "Import embeddings"),
      el("span", { class: "help" }, " — vectors from elsewhere, measured as a run without a model")),
    el("form", { onsubmit: submit },
      el("p", { class: "small" }, "An ", el("code", {}, ".npz"), " with ", el("code", {}, "vectors"), " (N × D floats) and ",
        el("code", {}, "labels"), " (N), optionally ", el("code", {}, "image_ids"), " (images of the dataset below) and ",
        el("code", {}, "split"), " (\"train\"/\"test\"); or an ", el("code", {}, ".npy"), " structured array with those fields."),
      el("div", { class: "row" }, el("label", { for: "emb-file" }, "File"), file),
      el("div", { class: "row" }, el("label", { for: "emb-name" }, "Name"), name),
      el("div", { class: "row" }, el("label", { for: "emb-dataset" }, "Images of"), dataset),
      el("div", { class: "row" }, el("label", { for: "emb-distance" }, "Distance"), distance),
      el("button", { type: "submit", class: "primary" }, "Import")),
    status);
}

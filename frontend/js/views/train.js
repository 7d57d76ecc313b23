// Train tab: pick an image set, configure a run (form generated from GET /api/components), start it.
// Starting a run opens its page, which follows the progress live.
import { api } from "../api.js";
import { configForm } from "../configform.js";
import { el, empty, errorBox, fill, loading } from "../dom.js";
import { href, navigate, params } from "../url.js";

export function renderTrain(root) {
  const panel = el("section", { class: "panel", "aria-labelledby": "train-h" },
    el("header", {}, el("h2", { id: "train-h" }, "Train a run")), loading("components"));
  root.append(panel);
  Promise.all([api.components(), api.datasets()])
    .then(([components, { data: datasets }]) => build(panel, components, datasets))
    .catch((err) => panel.append(errorBox(err, "Could not load the components")));
  return () => {};
}

function build(panel, components, datasets) {
  panel.querySelector(".state")?.remove();
  if (!datasets.length) {
    panel.append(empty("No image set to train on yet.",
      el("a", { href: href({ tab: "data" }), "data-nav": true }, "Upload one on the Data tab")));
    return;
  }
  const wanted = params().get("dataset");
  const dataset = el("select", { id: "train-dataset" }, datasets.map((d) =>
    el("option", { value: d.id, selected: d.id === wanted }, `${d.name} (${d.num_images} images, ${d.num_classes} classes)`)));
  const name = el("input", { id: "train-name", type: "text", placeholder: "e.g. triplet + det" });
  const form = configForm(components, components.run_config.defaults, "train");
  const status = el("div", { "aria-live": "polite" });
  const start = el("button", { type: "submit", class: "primary" }, "Start training");

  const formNode = el("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      start.disabled = true;
      fill(status, el("p", { class: "state loading" }, "Queueing the run…"));
      try {
        const run = await api.createRun(dataset.value, form.read(), name.value.trim() || undefined);
        navigate({ run: run.id });
      } catch (err) {
        start.disabled = false;
        form.markErrors(err.fields);
        fill(status, errorBox(err, "The run was not started"));
      }
    },
  },
  el("div", { class: "form-grid", style: { marginBottom: "0.75rem" } },
    el("label", { for: "train-dataset" }, "Image set"), dataset,
    el("label", { for: "train-name" }, "Run name"), name),
  form.node,
  el("div", { class: "row" }, start, el("span", { class: "help" }, "Defaults train the built-in set in about a minute on 2 CPU cores.")),
  status);
  panel.append(formNode);
}

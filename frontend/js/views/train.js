// Train tab: pick an image set, configure a run (form generated from GET /api/components), start it.
// Starting a run opens its page, which follows the progress live. A set with a predefined split (a benchmark
// imported with `dmlscope import`) defaults to it; uploaded weights files are offered as a list; a recipe
// preset (e.g. the benchmark recipe) redraws the form from its whole config.
import { api } from "../api.js";
import { configForm } from "../configform.js";
import { el, empty, errorBox, fill, loading } from "../dom.js";
import { href, navigate, params } from "../url.js";

export function renderTrain(root) {
  const panel = el("section", { class: "panel", "aria-labelledby": "train-h" },
    el("header", {}, el("h2", { id: "train-h" }, "Train a run")), loading("components"));
  root.append(panel);
  Promise.all([api.components(), api.datasets(), api.weights()])
    .then(([components, { data: datasets }, { data: weights }]) => build(panel, components, datasets, weights))
    .catch((err) => panel.append(errorBox(err, "Could not load the components")));
  return () => {};
}

function build(panel, components, datasets, weights) {
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
  const formSlot = el("div", {});
  let form;
  const followSplit = () => {  // a benchmark's own split by default; another set cannot use it
    const splitMode = form.node.querySelector('[data-path="split.mode"]');
    const chosen = datasets.find((d) => d.id === dataset.value);
    if (chosen?.has_predefined_split) splitMode.value = "predefined";
    else if (splitMode.value === "predefined") splitMode.value = "first_half";
  };
  const mountForm = (start) => {  // (re)draws the config form from a whole RunConfig: defaults or a preset
    form = configForm(components, start, "train", weights);
    form.node.querySelector('[data-path="weights_id"]').parentElement.append(weightsUpload(form));
    fill(formSlot, form.node);
    followSplit();
  };
  dataset.addEventListener("change", followSplit);
  mountForm(components.run_config.defaults);
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
    el("label", { for: "train-name" }, "Run name"), name,
    ...presetPicker(components.run_config, mountForm)),
  formSlot,
  el("div", { class: "row" }, start, el("span", { class: "help" }, "Defaults train the built-in set in about a minute on 2 CPU cores.")),
  status);
  panel.append(formNode);
}

/** Recipe presets (GET /api/components run_config.presets): choosing one redraws the form from its config. */
function presetPicker(runConfig, mountForm) {
  const presets = runConfig.presets || {};
  const help = el("span", { class: "help" });
  const select = el("select", { id: "train-preset" },
    el("option", { value: "" }, "defaults (small CNN, quick on a CPU)"),
    Object.keys(presets).map((key) => el("option", { value: key }, key)));
  select.addEventListener("change", () => {
    const preset = presets[select.value];
    fill(help, preset ? preset.description : "");
    mountForm(preset ? preset.config : runConfig.defaults);
  });
  return [el("label", { for: "train-preset" }, "Recipe"), el("div", {}, select, " ", help)];
}

/** Upload a state_dict for the chosen backbone (POST /api/weights); it joins the form's weights list, chosen. */
function weightsUpload(form) {
  const file = el("input", { id: "weights-file", type: "file", accept: ".pt,.pth,.bin" });
  const status = el("span", { role: "status", class: "help" });
  const send = async () => {
    if (!file.files[0]) return;
    const body = new FormData();
    body.append("file", file.files[0], file.files[0].name);
    body.append("backbone", form.backbone());
    fill(status, `Checking ${file.files[0].name} against ${form.backbone()}…`);
    try {
      const record = await api.uploadWeights(body);
      form.addWeights(record);
      fill(status, `Uploaded “${record.name}”: chosen as the weights file.`);
    } catch (err) {
      fill(status, errorBox(err, "Weights rejected"));
    }
    file.value = "";
  };
  file.addEventListener("change", send);
  return el("details", { class: "weights-upload" }, el("summary", {}, "Upload a weights file for the chosen backbone"),
    el("div", { class: "row" }, el("label", { for: "weights-file" }, "state_dict (.pt/.pth)"), file), status);
}

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
  Promise.all([api.components(), api.datasets(), api.weights(), api.health()])
    .then(([components, { data: datasets }, { data: weights }, health]) =>
      build(panel, components, datasets, weights, health))
    .catch((err) => panel.append(errorBox(err, "Could not load the components")));
  return () => {};
}

function build(panel, components, datasets, weights, health) {
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
  const processes = processesChoice(health);
  const status = el("div", { "aria-live": "polite" });
  const start = el("button", { type: "submit", class: "primary" }, "Start training");

  const formNode = el("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      start.disabled = true;
      fill(status, el("p", { class: "state loading" }, "Queueing the run…"));
      try {
        const count = processes?.select.value;
        const run = await api.createRun(dataset.value, form.read(), name.value.trim() || undefined,
          count === undefined || count === "auto" ? count : Number(count));
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
    ...presetPicker(components.run_config, mountForm),
    ...(processes ? [el("label", { for: "train-processes" }, "Processes"), processes.node] : [])),
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

/** How many processes train the run (data-parallel under torchrun), offered when the server has more than one
 *  device to give (GET /api/health): one per GPU, or up to two CPU processes with device "cpu". */
function processesChoice(health) {
  const most = Math.max(health.gpus, Math.min(health.cpus, 2));
  if (most < 2) return null;
  const counts = Array.from({ length: most }, (_, i) => String(i + 1));
  const select = el("select", { id: "train-processes" },
    counts.map((n) => el("option", { value: n }, n === "1" ? "1 (one process)" : `${n} (torchrun)`)),
    health.gpus > 1 ? el("option", { value: "auto" }, `auto (every GPU: ${health.gpus})`) : null);
  const help = el("span", { class: "help" }, health.gpus > 0
    ? "one GPU per process; the batch (classes × samples per class) must split evenly"
    : "CPU processes: set device to cpu; the batch (classes × samples per class) must split evenly");
  return { select, node: el("span", {}, select, " ", help) };
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

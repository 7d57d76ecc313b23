// Sweeps: the reality-check protocol in the browser. The tab (/?tab=sweeps) starts a sweep and lists them;
// a sweep's page (/?sweep=<id>) follows its runs live and shows its report (sweepreport.js): the same table
// as `dmlscope sweep`, a chart of the paired differences, and the hyper-parameter selection.
import { api, followSweep } from "../api.js";
import { configForm } from "../configform.js";
import { el, empty, errorBox, fill, loading } from "../dom.js";
import { statusBadge } from "../runinfo.js";
import { href, navigate } from "../url.js";
import { reportPanel } from "./sweepreport.js";

const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 2000;

export function renderSweeps(root) {
  const form = el("div", {}, loading("the form"));
  const list = el("div", {}, loading("sweeps"));
  root.append(el("section", { class: "panel", "aria-labelledby": "sweep-form-h" },
    el("header", {}, el("h2", { id: "sweep-form-h" }, "Start a sweep"),
      el("span", { class: "help" }, "Each variant against the baseline over random class splits × seeds, paired, with the same step budget.")),
    form), el("section", { class: "panel", "aria-labelledby": "sweeps-h" },
    el("header", {}, el("h2", { id: "sweeps-h" }, "Sweeps")), list));
  Promise.all([api.sweepVariants(), api.components(), api.datasets()])
    .then(([variants, components, { data: datasets }]) => buildForm(form, variants, components, datasets))
    .catch((err) => fill(form, errorBox(err, "Could not load the sweep form")));

  let timer = null;
  async function refresh() {
    try {
      const [{ data: sweeps }, { data: sets }] = await Promise.all([api.sweeps(), api.datasets()]);
      const names = Object.fromEntries(sets.map((d) => [d.id, d.name]));
      fill(list, sweeps.length ? sweepTable(sweeps, names) : empty("No sweeps yet."));
      timer = sweeps.some((s) => ACTIVE.has(s.status)) ? setTimeout(refresh, POLL_MS) : null;
    } catch (err) {
      fill(list, errorBox(err, "Could not list the sweeps"));
    }
  }
  refresh();
  return () => clearTimeout(timer);
}

function sweepTable(sweeps, datasetNames) {
  return el("table", { id: "sweep-list" },
    el("thead", {}, el("tr", {}, ["Sweep", "Status", "Runs", "Data set", "Started"].map((h) => el("th", {}, h)))),
    el("tbody", {}, sweeps.map((s) => el("tr", { "data-sweep": s.id },
      el("td", {}, el("a", { href: href({ sweep: s.id }), "data-nav": true }, s.name)),
      el("td", {}, statusBadge(s)),
      el("td", { class: "num" }, `${s.finished} / ${s.total}`),
      el("td", {}, datasetNames[s.dataset_id] || s.dataset_id),
      el("td", { class: "small muted" }, s.created_at)))));
}

function buildForm(box, catalogue, components, datasets) {
  if (!datasets.length) {
    fill(box, empty("No image set yet.", el("a", { href: href({ tab: "data" }), "data-nav": true }, "Upload one on the Data tab")));
    return;
  }
  const defaults = catalogue.defaults;
  const dataset = el("select", { id: "sweep-dataset" }, datasets.map((d) =>
    el("option", { value: d.id }, `${d.name} (${d.num_images} images, ${d.num_classes} classes)`)));
  const name = el("input", { id: "sweep-name", type: "text", placeholder: "(optional)" });
  const number = (id, value, min, max) => el("input", { id, type: "number", min, max, step: 1, value, required: true });
  const splits = number("sweep-splits", defaults.splits, 1, 50);
  const seeds = number("sweep-seeds", defaults.seeds, 1, 50);
  const minSteps = number("sweep-min_steps", defaults.min_steps, 1, 10000000);
  const select = el("input", { id: "sweep-select", type: "checkbox", checked: defaults.select });
  const boxes = catalogue.variants.map((v) => el("input", { type: "checkbox", id: `sweep-variant-${v.name}`,
    value: v.name, checked: v.default }));
  const variantList = el("ul", { class: "variant-list" }, catalogue.variants.map((v, i) => el("li", {},
    el("label", { for: boxes[i].id }, boxes[i], el("strong", {}, v.name), v.extra ? el("span", { class: "badge" }, "extra") : null),
    el("span", { class: "help" }, ` ${v.description}`),
    v.control ? el("span", { class: "small muted" }, ` · read against its control ${v.control}`) : null,
    v.grid.length ? el("span", { class: "small muted", title: v.grid.map((g) => JSON.stringify(g)).join("\n") },
      ` · ${v.grid.length}-point grid`) : null)));
  const count = el("span", { class: "help", "aria-live": "polite" });
  const base = configForm(components, components.run_config.defaults, "sweep");
  const status = el("div", { "aria-live": "polite" });
  const start = el("button", { type: "submit", class: "primary" }, "Start the sweep");

  const node = el("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      start.disabled = true;
      fill(status, el("p", { class: "state loading" }, "Planning the sweep…"));
      try {
        const sweep = await api.createSweep({
          dataset_id: dataset.value, name: name.value.trim() || undefined,
          variants: boxes.filter((b) => b.checked).map((b) => b.value),
          splits: Number(splits.value), seeds: Number(seeds.value), min_steps: Number(minSteps.value),
          select: select.checked, config: base.read(),
        });
        navigate({ sweep: sweep.id });
      } catch (err) {
        start.disabled = false;
        base.markErrors(err.fields);
        fill(status, errorBox(err, "The sweep was not started"));
      }
    },
  },
  el("div", { class: "form-grid" },
    el("label", { for: "sweep-dataset" }, "Image set"), dataset,
    el("label", { for: "sweep-name" }, "Sweep name"), name,
    el("label", { for: "sweep-splits" }, "Class splits"), el("div", {}, splits, el("span", { class: "help" }, " random train/test class splits, seeded")),
    el("label", { for: "sweep-seeds" }, "Seeds"), el("div", {}, seeds, el("span", { class: "help" }, " per split; pairs = splits × seeds")),
    el("label", { for: "sweep-select" }, "Select hyper-parameters"), el("div", {}, select,
      el("span", { class: "help" }, " pick each variant's λ/τ/margin from its grid on a validation split of the training classes (never the test classes)")),
    el("label", { for: "sweep-min_steps" }, "Minimum steps"), el("div", {}, minSteps, el("span", { class: "help" }, " fewer training steps, or a loss that did not fall: flagged under-trained"))),
  el("fieldset", { class: "wide" }, el("legend", {}, "Variants (each compared with the baseline)"), variantList),
  el("details", {}, el("summary", {}, el("strong", {}, "Base run"),
    el("span", { class: "help" }, " — every variant patches this config and trains with its epochs × steps budget; the sweep sets the split and seed")),
  base.node),
  el("div", { class: "row" }, start, count), status);
  // What the sweep will train: per variant its selection runs (one per grid point and split) and splits × seeds.
  const recount = () => {
    const pairs = Number(splits.value) * Number(seeds.value);
    const runs = catalogue.variants.filter((v, i) => boxes[i].checked)
      .reduce((n, v) => n + pairs + (select.checked ? v.grid.length * Number(splits.value) : 0), 0);
    fill(count, `${runs} runs`);
  };
  node.addEventListener("input", recount);
  node.addEventListener("change", recount);
  recount();
  fill(box, node);
}

// ---- one sweep ----------------------------------------------------------------------------------------
export function renderSweep(root, sweepId) {
  const cleanups = [];
  root.append(loading("the sweep"));
  api.sweep(sweepId).then((sweep) => {
    fill(root);
    const page = sweepPage(root, cleanups);
    page.update(sweep);
    if (ACTIVE.has(sweep.status)) {
      cleanups.push(followSweep(sweep.id, { sweep: page.update, end: page.update,
        error: () => api.sweep(sweep.id).then(page.update).catch(() => {}) }));
    }
  }).catch((err) => fill(root, errorBox(err, `Sweep ${sweepId}`),
    el("a", { href: href({ tab: "sweeps" }), "data-nav": true }, "All sweeps")));
  return () => cleanups.splice(0).forEach((f) => f());
}

function sweepPage(root, cleanups) {
  const title = el("h2", { id: "sweep-h" });
  const badge = el("span");
  const actions = el("div", { class: "actions" });
  const about = el("p", { class: "small" });
  const errors = el("div");
  const progress = el("div", { class: "progress", id: "sweep-progress" });
  const results = reportPanel(cleanups);
  const runs = el("div");
  root.append(
    el("section", { class: "panel", "aria-labelledby": "sweep-h" },
      el("header", {}, title, badge, actions), about, progress, errors),
    results.node,
    el("section", { class: "panel", "aria-labelledby": "sweep-runs-h" },
      el("header", {}, el("h2", { id: "sweep-runs-h" }, "Runs")), runs));
  let shownReport = "";

  const act = (label, call, cls = "") => el("button", { type: "button", class: cls, onclick: async () => {
    try { await call(); } catch (err) { fill(errors, errorBox(err, `${label} failed`)); }
  } }, label);

  function update(sweep) {
    fill(title, sweep.name);
    fill(badge, statusBadge(sweep));
    fill(actions,
      ACTIVE.has(sweep.status) ? act("Cancel the sweep", async () => update(await api.cancelSweep(sweep.id)), "danger") : null,
      ["interrupted", "cancelled"].includes(sweep.status)
        ? act("Resume", async () => { await api.resumeSweep(sweep.id); navigate({ sweep: sweep.id }); }) : null);
    const spec = sweep.spec;
    fill(about, `${spec.variants.join(", ")} · ${spec.splits} split(s) × ${spec.seeds} seed(s) · `,
      `${spec.base.epochs} epoch(s) × ${spec.base.steps_per_epoch} steps per run (minimum ${spec.min_steps}) · `,
      spec.select ? "hyper-parameters selected on a validation split" : "no selection (each variant's own patch)",
      el("span", { class: "muted mono" }, `  · id ${sweep.id}`));
    const training = sweep.runs.reduce((sum, r) => sum + (r.fraction || 0), 0); // runs part-way through
    const share = sweep.total ? (sweep.finished + training) / sweep.total : 0;
    fill(progress, el("div", { class: "row" }, el("strong", {}, `${sweep.finished} / ${sweep.total} runs finished`),
      el("span", { class: "small muted" }, `started ${sweep.created_at}${sweep.finished_at ? `, ended ${sweep.finished_at}` : ""}`)),
    el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": sweep.total, "aria-valuenow": sweep.finished },
      el("span", { style: { width: `${(100 * share).toFixed(1)}%` } })));
    fill(errors, sweep.error ? errorBox({ error: `This sweep is ${sweep.status}`, detail: sweep.error }) : null);
    fill(runs, runTable(sweep.runs, sweep.report?.planned || []));
    const report = JSON.stringify(sweep.report);
    if (report !== shownReport) {
      shownReport = report;
      results.update(sweep.report);
    }
  }
  return { update };
}

/** Every planned run: the launched ones link to their run page, the others say whether they wait on the
 * selection (`waiting`) or on a free worker (`ready`). */
function runTable(runs, planned) {
  const launched = new Map(runs.map((r) => [r.key, r]));
  const rows = [...runs, ...planned.filter((p) => !launched.has(p.key))];
  if (!rows.length) return empty("No run planned yet.");
  return el("div", { class: "table-scroll" }, el("table", { id: "sweep-runs" },
    el("thead", {}, el("tr", {}, ["Run", "Phase", "Variant", "Split", "Seed", "Grid point", "Status", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", { "data-key": r.key },
      el("td", {}, r.run_id ? el("a", { href: href({ run: r.run_id }), "data-nav": true }, r.name) : el("span", { class: "muted" }, r.key)),
      el("td", {}, r.phase), el("td", {}, r.variant), el("td", { class: "num" }, r.split),
      el("td", { class: "num" }, r.seed), el("td", { class: "num" }, r.grid_index ?? "—"),
      el("td", {}, r.run_id ? [statusBadge(r), r.fraction !== null ? ` ${Math.round(100 * r.fraction)} %` : ""]
        : r.status === "waiting" ? el("span", { class: "badge", title: "waits for its split's selection runs" }, "waiting")
          : el("span", { class: "badge", title: "planned; starts when a worker is free" }, "ready")),
      el("td", {}, r.under_trained ? el("span", { class: "badge approx", title: "see the run page for the reasons" }, "under-trained") : null))))));
}

// Data tab: upload an image set (a zip dropped or picked, or a picked folder) and follow its import (progress,
// cancel, why it failed), list the sets with their state, and show one: per-class counts, a few thumbnails per
// class, the files that were rejected and why.
import { api, followDataset } from "../api.js";
import { el, empty, errorBox, fill, loading } from "../dom.js";
import { href, params, setParams } from "../url.js";

const THUMBS_PER_CLASS = 12;
const MAX_CLASSES_SHOWN = 24;

export function renderData(root) {
  const list = el("div", {}, loading("image sets"));
  const detail = el("div", {}, loading("the image set"));
  const report = el("div", { "aria-live": "polite" });
  const followers = new Set();  // open import event streams, closed when the tab is left
  const follow = (box, dataset, done) => {
    const stop = importProgress(box, dataset, (d) => { followers.delete(stop); done(d); });
    followers.add(stop);
  };
  root.append(el("div", { class: "grid-3" },
    el("div", {},
      el("section", { class: "panel", "aria-labelledby": "detail-h" }, detail),
    ),
    el("div", {},
      uploadPanel(report, follow, refresh, (dataset) => { setParams({ dataset: dataset.id }); refresh(); }),
      el("section", { class: "panel", "aria-labelledby": "sets-h" },
        el("header", {}, el("h2", { id: "sets-h" }, "Image sets")), list),
    ),
  ));

  async function refresh() {
    let datasets;
    try {
      ({ data: datasets } = await api.datasets());
    } catch (err) {
      fill(list, errorBox(err, "Could not list image sets"));
      fill(detail, el("h2", { id: "detail-h" }, "Image set"));
      return;
    }
    const chosen = datasets.find((d) => d.id === params().get("dataset")) || datasets[0];
    fill(list, datasets.length ? datasetTable(datasets, chosen) : empty("No image sets yet: upload one."));
    if (chosen) showDataset(detail, chosen, refresh, follow);
    else fill(detail, el("h2", { id: "detail-h" }, "Image set"), empty("Upload a zip or a folder to begin."));
  }
  refresh();
  return () => followers.forEach((stop) => stop());
}

function datasetTable(datasets, chosen) {
  return el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Source"), el("th", { class: "num" }, "Images"),
      el("th", { class: "num" }, "Classes"), el("th", {}, "Split"), el("th", { class: "num" }, "Runs"),
      el("th", {}, "State"))),
    el("tbody", {}, datasets.map((d) => el("tr", { class: d === chosen ? "selected" : null, "data-state": d.state },
      el("td", {}, el("a", { href: href({ tab: "data", dataset: d.id }), "data-nav": true,
        "aria-current": d === chosen ? "true" : null }, d.name)),
      el("td", {}, d.source), el("td", { class: "num" }, d.num_images), el("td", { class: "num" }, d.num_classes),
      el("td", { class: "split" }, splitText(d, true)), el("td", { class: "num" }, d.run_count ?? 0),
      el("td", { class: `import-state ${d.state}` }, stateText(d))))));
}

const percent = (fraction) => `${Math.floor(fraction * 100)}%`;

function stateText(d) {
  if (d.state === "importing") return d.progress ? `importing ${percent(d.progress.fraction)}` : "importing";
  return d.state;
}

/** Follow an import in `box`: a progress bar, what it has read, and a Cancel button; `done(dataset)` once it
 * has ended (state ready, failed or cancelled). Returns the function that stops following. */
function importProgress(box, dataset, done) {
  const bar = el("progress", { id: "import-progress", max: 1, value: dataset.progress?.fraction ?? 0 });
  const text = el("span", { class: "muted small" });
  const show = (p) => {
    bar.value = p?.fraction ?? 0;
    text.textContent = p ? `${p.step} of ${p.steps} files read (${percent(p.fraction)})` : "starting…";
  };
  const cancel = el("button", { type: "button", id: "cancel-import", onclick: async () => {
    cancel.disabled = true;
    try {
      await api.cancelImport(dataset.id);  // the stream then ends with the import cancelled
    } catch (err) {
      cancel.disabled = false;
      box.append(errorBox(err, "Not cancelled"));
    }
  } }, "Cancel import");
  show(dataset.progress);
  fill(box, el("div", { class: "progress", role: "status", "aria-label": `importing ${dataset.name}` },
    el("p", {}, `Importing “${dataset.name}”: the server checks and re-encodes every image.`), bar,
    el("div", { class: "row" }, text, cancel)));
  return followDataset(dataset.id, {
    progress: show,
    end: done,
    error: () => fill(box, errorBox({ error: "Lost the import's progress", detail: "reload the page to see its state" })),
  });
}

function importFailed(dataset) {
  return errorBox({ error: `Import of “${dataset.name}” failed`,
    detail: `${dataset.error} Delete this set, fix the data and upload it again.` });
}

/** A benchmark's own train/test split in words ("—" for sets without one: they split by class at train time). */
function splitText(d, brief = false) {
  const s = d.predefined_split;
  if (!s) return d.has_predefined_split ? "predefined" : brief ? "—" : "";
  return brief ? `${s.train_classes} / ${s.test_classes} classes`
    : `predefined split: train ${s.train_images} images in ${s.train_classes} classes, `
      + `test ${s.test_images} images in ${s.test_classes} classes`;
}

/** How to bring a benchmark in: a folder on the server is the command line's to read, never a request's. */
function benchmarkHelp() {
  return el("details", { class: "benchmark-help" },
    el("summary", {}, "CUB-200, Cars196, SOP or In-Shop?"),
    el("p", {}, "Import a local copy in its published layout, with its standard train/test split, on the machine "
      + "that runs the server:"),
    el("pre", {}, el("code", {}, "dmlscope import cub|cars|sop|inshop PATH [--name NAME] [--data-dir DATA]")),
    el("p", { class: "muted small" }, "It appears here with its split; the Train tab then defaults to "
      + "split mode “predefined”."));
}

function uploadPanel(report, follow, onListed, onImported) {
  const name = el("input", { id: "upload-name", type: "text", placeholder: "(zip or folder name)" });
  const zipInput = el("input", { type: "file", accept: ".zip,application/zip", class: "visually-hidden",
    id: "zip-input", tabindex: "-1", "aria-hidden": "true" });
  const dirInput = el("input", { type: "file", webkitdirectory: true, multiple: true, class: "visually-hidden",
    id: "folder-input", tabindex: "-1", "aria-hidden": "true" });
  const status = el("div", { role: "status" });

  async function send(form, what) {
    if (name.value.trim()) form.append("name", name.value.trim());
    fill(status, el("p", { class: "state loading" }, `Uploading ${what}…`));
    fill(report);
    let dataset;
    try {
      dataset = await api.uploadDataset(form);
    } catch (err) {
      fill(status, errorBox(err, "Upload rejected"));
      return;
    }
    const finished = (d) => {
      fill(status);
      if (d.state === "ready") fill(report, importReport(d));
      else if (d.state === "failed") fill(status, importFailed(d));
      else fill(status, el("p", { class: "state empty", role: "status" }, `Import of “${d.name}” cancelled: nothing of it was kept.`));
      if (d.state === "cancelled") onListed();
      else onImported(d);
    };
    if (dataset.state !== "importing") {
      finished(dataset);
      return;
    }
    onListed();  // the list shows it importing
    follow(status, dataset, finished);
  }
  const sendZip = (file) => {
    const form = new FormData();
    form.append("file", file, file.name);
    send(form, file.name);
  };
  const sendFiles = (files) => {
    const form = new FormData();
    let bytes = 0;
    for (const { file, path } of files) {
      form.append("files", file, path);
      bytes += file.size;
    }
    send(form, `${files.length} files (${(bytes / 1e6).toFixed(1)} MB)`);
  };

  zipInput.addEventListener("change", () => zipInput.files[0] && sendZip(zipInput.files[0]));
  dirInput.addEventListener("change", () => {
    const files = [...dirInput.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
    if (files.length) sendFiles(files);
  });

  const zone = el("div", { class: "dropzone" },
    el("p", {}, "Drop a ", el("strong", {}, ".zip"), " or a folder here: one sub-folder per class (",
      el("code", {}, "cats/001.jpg"), ")."),
    el("div", { class: "row" },
      el("button", { type: "button", onclick: () => zipInput.click() }, "Choose zip…"),
      el("button", { type: "button", onclick: () => dirInput.click() }, "Choose folder…")),
    zipInput, dirInput);
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    const dropped = await droppedFiles(ev.dataTransfer);
    if (dropped.length === 1 && /\.zip$/i.test(dropped[0].path)) sendZip(dropped[0].file);
    else if (dropped.length) sendFiles(dropped);
  });

  return el("section", { class: "panel", "aria-labelledby": "upload-h" },
    el("header", {}, el("h2", { id: "upload-h" }, "Upload an image set")),
    el("div", { class: "row" }, el("label", { for: "upload-name" }, "Name"), name),
    zone, benchmarkHelp(), status, report);
}

/** Files of a drop, with folder structure: a dropped folder is walked so each file keeps its relative path. */
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files].map((file) => ({ file, path: file.name }));
  const out = [];
  async function walk(entry) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: entry.fullPath.replace(/^\//, "") });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      // readEntries returns the directory in batches until an empty one.
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return out;
}

const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

function importReport(dataset) {
  return el("div", { class: "state empty" },
    el("p", {}, el("strong", {}, `Imported “${dataset.name}”: `),
      `${dataset.num_images} images in ${dataset.num_classes} classes.`),
    dataset.skipped_count ? el("p", {}, `${plural(dataset.skipped_count, "file")} rejected (listed with the set).`) : null);
}

async function showDataset(box, dataset, refresh, follow) {
  if (dataset.state !== "ready") {
    const progress = el("div", { id: "detail-progress" });
    const remove = dataset.state === "failed"
      ? el("button", { type: "button", class: "danger", onclick: () => removeDataset(dataset, deleteStatus, refresh) }, "Delete")
      : null;
    const deleteStatus = el("div", { id: "delete-status" });
    fill(box, el("header", {}, el("h2", { id: "detail-h" }, dataset.name), el("span", { class: "badge" }, dataset.source),
      el("div", { class: "actions" }, remove)), deleteStatus,
    dataset.state === "failed" ? importFailed(dataset) : progress);
    if (dataset.state === "importing") follow(progress, dataset, () => refresh());
    return;
  }
  const images = dataset.has_images !== false;  // false: the labels of imported embeddings, nothing to train on
  const thumbs = el("div", {}, images ? loading("thumbnails") : null);
  const actions = el("div", { class: "actions" },
    images ? el("a", { class: "button", href: href({ tab: "train", dataset: dataset.id }), "data-nav": true }, "Train on this set") : null,
    el("button", { type: "button", class: "danger", onclick: () => removeDataset(dataset, deleteStatus, refresh) }, "Delete"));
  const deleteStatus = el("div", { id: "delete-status" });
  fill(box,
    el("header", {}, el("h2", { id: "detail-h" }, dataset.name), el("span", { class: "badge" }, dataset.source), actions),
    deleteStatus,
    images ? el("p", { class: "muted" }, `${dataset.num_images} images · ${dataset.num_classes} classes · `,
      `${dataset.channels === 1 ? "greyscale" : "colour"}`, dataset.native_size ? ` · ${dataset.native_size} px` : "",
      dataset.has_predefined_split ? ` · ${splitText(dataset) || "predefined train/test split"}` : "")
      : el("p", { class: "state empty", id: "labels-only" }, `The labels of ${dataset.num_images} imported embeddings in `
        + `${dataset.num_classes} classes, with no images: nothing to show as thumbnails or to train on. Its run `
        + "shows the map, statistics and neighbours of the vectors."),
    el("h3", {}, "Images per class"),
    el("div", { class: "class-counts" }, dataset.classes.map((c) =>
      el("span", { class: "badge" }, `${c.name}: ${c.count}`))),
    (dataset.warnings || []).map((w) => el("p", { class: "state empty" }, w)),
    thumbs,
    images ? rejected(dataset) : null);
  if (!images) return;
  const classes = dataset.classes.slice(0, MAX_CLASSES_SHOWN);
  try {
    const pages = await Promise.all(classes.map((c) =>
      api.datasetImages(dataset.id, { class_name: c.name, limit: THUMBS_PER_CLASS })));
    fill(thumbs,
      el("h3", {}, "Thumbnails", dataset.classes.length > MAX_CLASSES_SHOWN
        ? el("span", { class: "muted small" }, ` (first ${MAX_CLASSES_SHOWN} classes)`) : null),
      el("div", { class: "thumbs" }, pages.flatMap((page, i) => [
        el("span", { class: "class-name", title: classes[i].name }, classes[i].name),
        el("div", { class: "strip" }, page.data.map((img) =>
          el("img", { src: img.thumb_url, alt: `${img.class}: ${img.path}`, loading: "lazy", title: img.path })))])));
  } catch (err) {
    fill(thumbs, errorBox(err, "Could not load thumbnails"));
  }
}

function rejected(dataset) {
  const skipped = dataset.skipped || [], count = dataset.skipped_count ?? skipped.length;
  if (!count) return el("p", { class: "muted small" }, "No files were rejected.");
  return el("details", { open: count <= 20 },
    el("summary", {}, `${plural(count, "rejected file")}`),
    count > skipped.length ? el("p", { class: "muted small" }, `The first ${skipped.length} are listed; `,
      el("a", { href: `/api/datasets/${dataset.id}/skipped`, target: "_blank" }, "all of them"), " (JSON).") : null,
    el("div", { class: "table-scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "File"), el("th", {}, "Reason"))),
      el("tbody", {}, skipped.map((s) => el("tr", {}, el("td", { class: "mono" }, s.path), el("td", {}, s.reason)))))));
}

const CANCEL_POLL_MS = 500;

/** Delete a set, saying what it takes: its runs go with it, and queued or running ones are cancelled first
 * (the server refuses while any is active). Messages land in `status`, under the set's header. */
async function removeDataset(dataset, status, refresh) {
  const show = (err) => {
    fill(status, errorBox(err, "Not deleted"));
    status.scrollIntoView({ block: "nearest" });
  };
  fill(status);
  try {
    const { data: runs } = await api.runs({ dataset_id: dataset.id });
    const active = runs.filter((r) => r.status === "queued" || r.status === "running");
    const question = active.length
      ? `“${dataset.name}” has ${plural(active.length, "run")} queued or running (${active.map((r) => r.name || r.id).join(", ")}).\n\n`
        + `Cancel ${active.length === 1 ? "it" : "them"} and delete the set with all its ${plural(runs.length, "run")}?`
      : runs.length ? `Delete the image set “${dataset.name}” and its ${plural(runs.length, "run")} (results included)?`
        : `Delete the image set “${dataset.name}”?`;
    if (!window.confirm(question)) return;
    if (active.length) {
      fill(status, el("p", { class: "state loading", role: "status" }, `Cancelling ${plural(active.length, "run")}…`));
      await Promise.all(active.map((r) => api.cancel(r.id)));
      await until(async () => (await api.runs({ dataset_id: dataset.id })).data.every((r) => r.status !== "queued" && r.status !== "running"));
    }
    await api.deleteDataset(dataset.id, runs.length > 0);
  } catch (err) {
    show(err);
    return;
  }
  setParams({ dataset: null });
  refresh();
}

/** Resolve once `check()` is true (polled; a run stops after its current step), or fail after `seconds`. */
async function until(check, seconds = 120) {
  const end = Date.now() + seconds * 1000;
  while (!(await check())) {
    if (Date.now() > end) {
      throw { error: "The runs did not stop", detail: "they are still active; open them from the Runs tab and cancel them there" };
    }
    await new Promise((resolve) => setTimeout(resolve, CANCEL_POLL_MS));
  }
}

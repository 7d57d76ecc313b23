// Short descriptions of a run shared by the run list, the run page and the comparison.
import { el } from "./dom.js";
import { metricLabel } from "./metricnames.js";

const STATUS_CLASS = { done: "ok", failed: "fail", cancelled: "fail", interrupted: "fail" };

export function statusBadge(run) {
  return el("span", { class: `badge ${STATUS_CLASS[run.status] || ""}`, "data-status": run.status }, run.status);
}

/** "small_cnn · triplet/semihard · euclidean · det 0.05 · flow×4 · 6 ep"; "imported embeddings · 512-d · cosine"
 * for a run of `origin` embeddings, which has no network or training. */
export function configLine(cfg, origin) {
  if (origin === "embeddings") return `imported embeddings · ${cfg.embedding_dim}-d · ${cfg.distance.name}`;
  const regs = (cfg.regularizers || []).map((r) => `${r.name} ${r.weight}`);
  return [cfg.backbone, `${cfg.loss.name}/${cfg.miner.name}`,
    `${cfg.distance.name}${cfg.distance.normalize ? " (normalized)" : ""}`, ...regs,
    cfg.flow.enabled ? `flow×${cfg.flow.depth}` : null, `${cfg.epochs} ep`].filter(Boolean).join(" · ");
}

/** Headline test metrics of a finished run, from its summary: [[label, value], …]. */
export function headline(run) {
  const test = run.summary?.test || run.summary?.metrics?.test;
  if (!test) return [];
  return ["recall_at_1", "map_at_r"].filter((k) => test[k] !== undefined).map((k) => [metricLabel(k), test[k]]);
}

export const runLabel = (run) => run.name || run.id;

/** The warning a run's summary carries when it trained too few steps or its loss did not fall; else null. */
export function underTrainedNote(run) {
  const flag = run.summary?.under_trained;
  if (!flag?.flag) return null;
  return el("div", { class: "state warn", role: "note", "data-under-trained": true },
    el("strong", {}, "Under-trained: "), (flag.reasons || []).join("; ") || "see the run's history");
}

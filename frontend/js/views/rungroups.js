// The leaderboard grouped by configuration across seeds: one row per group of runs whose configs differ only
// in `seed` (grouped by the server: GET /api/run-groups), each number as mean ± sample standard deviation over
// the group's finished runs, with n.
import { api } from "../api.js";
import { el, errorBox, fill, fixed, loading } from "../dom.js";
import { metricDescription, metricLabel } from "../metricnames.js";
import { href } from "../url.js";

const regs = (c) => (c.regularizers || []).map((g) => `${g.name} ${g.weight}`).join(", ") || "—";
// [metric key (as GET /api/run-groups names it), header, title]; labels from GET /api/metrics.
const metric = (key, split) => [`${split === "train" ? "train_" : ""}${key}`, `${metricLabel(key)} ${split}`,
  metricDescription(key)];
const numbers = () => [metric("map_at_r", "test"), metric("recall_at_1", "test"), metric("map_at_r", "train"),
  ["gap", "train − test", "MAP@R on seen minus unseen classes"],
  metric("margin", "test"), metric("pi_ratio", "test"), metric("relative_density", "test")];

const spread = (m) => (m.mean === null ? "—" : m.std === null ? fixed(m.mean) : `${fixed(m.mean)} ± ${fixed(m.std)}`);

/** Fill `table` with the groups of the runs of `datasetId` (all sets when empty), best mean MAP@R first. */
export async function drawGroups(table, datasets, datasetId) {
  fill(table, loading("the groups"));
  let groups;
  try {
    ({ data: groups } = await api.runGroups(datasetId ? { dataset_id: datasetId } : {}));
  } catch (err) {
    fill(table, errorBox(err, "Could not group the runs"));
    return;
  }
  const NUMBERS = numbers();
  const key = (g) => g.metrics.map_at_r.mean ?? -Infinity;
  groups.sort((a, b) => key(b) - key(a));
  fill(table, el("table", { id: "leaderboard-groups" },
    el("thead", {}, el("tr", {}, ["configuration", "image set", "n", "seeds"].map((h) => el("th", {}, h)),
      NUMBERS.map(([, label, title]) => el("th", { class: "num", title }, label)))),
    el("tbody", {}, groups.map((g) => {
      const text = `${g.config.loss.name} · ${g.config.distance.name} · ${regs(g.config)} · flow ${g.config.flow.enabled ? `×${g.config.flow.depth}` : "off"}`
        + ` · ${g.config.epochs} epochs · lr ${g.config.optimizer.lr}`;
      return el("tr", { "data-group": g.config_key },
      el("td", { class: "clip", title: `${text}\nruns: ${g.run_ids.join(", ")}` }, text, " ",
        el("a", { href: href({ run: g.run_ids[0] }), "data-nav": true, class: "small" }, "newest run")),
      el("td", {}, datasets[g.dataset_id] || g.dataset_id),
      el("td", { class: "num", "data-n": g.n, title: `${g.n} finished of ${g.run_ids.length} runs` }, `n = ${g.n}`),
      el("td", { class: "small" }, g.seeds.join(", ")),
      NUMBERS.map(([k]) => el("td", { class: "num mono", title: `n = ${g.metrics[k].n}` }, spread(g.metrics[k]))));
    }))));
}

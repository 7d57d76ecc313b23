// Metric labels come from the server's one list (GET /api/metrics, models/headline.py): this page keeps no copy.
// main.js loads them before the first view draws; a key the list does not name is shown as itself.
import { api } from "./api.js";

let byKey = new Map();

/** Fetch the headline metrics once (key, label, description, kind, higher_is_better). */
export async function loadMetricNames() {
  const { metrics } = await api.metrics();
  byKey = new Map(metrics.map((m) => [m.key, m]));
}

/** The display label of a metric key. */
export const metricLabel = (key) => byKey.get(key)?.label ?? key;

/** The description of a metric key ("" when unknown), for a title attribute. */
export const metricDescription = (key) => byKey.get(key)?.description ?? "";

/** The keys of one kind ("retrieval" | "geometry"), in the server's order. */
export const metricKeys = (kind) => [...byKey.values()].filter((m) => m.kind === kind).map((m) => m.key);

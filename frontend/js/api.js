// The only way the UI talks to the server: the HTTP API documented in docs/api.md.
// URLs are relative ("api/…") so the app works wherever the server mounts it.

/** A non-2xx answer, carrying the server's {"error", "detail"} body. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body.detail || body.error || `HTTP ${status}`);
    this.status = status;
    this.error = body.error || `HTTP ${status}`;
    this.detail = body.detail || "";
    this.fields = body.fields || [];
  }
}

const TOKEN_KEY = "dmlscope.token";

/** The API token for mutating requests, when the server requires one (GET /api/health says so). */
export const token = {
  get: () => window.localStorage.getItem(TOKEN_KEY) || "",
  set: (value) => (value ? window.localStorage.setItem(TOKEN_KEY, value) : window.localStorage.removeItem(TOKEN_KEY)),
};

async function request(method, path, { json, form, raw = false } = {}) {
  const headers = {};
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  if (method !== "GET" && token.get()) headers.Authorization = `Bearer ${token.get()}`;
  let response;
  try {
    response = await fetch(`api/${path}`, { method, headers, body });
  } catch (err) {
    throw new ApiError(0, { error: "network_error", detail: `the server did not answer (${err.message}); is dmlscope serve running?` });
  }
  if (!response.ok) {
    let payload;
    try { payload = await response.json(); } catch { payload = { error: `HTTP ${response.status}`, detail: response.statusText }; }
    throw new ApiError(response.status, payload);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null)).toString();

export const api = {
  health: () => request("GET", "health"),
  components: () => request("GET", "components"),
  /** How config B differs from A: {patch (for a retrain), changes: [{path, before, after}]}. */
  configDiff: (base, config) => request("POST", "config/diff", { json: { base, config } }),
  runConfigDiff: (a, b) => request("GET", `config/diff?${q({ a, b })}`),
  metrics: () => request("GET", "metrics"),

  datasets: () => request("GET", "datasets"),
  dataset: (id) => request("GET", `datasets/${id}`),
  datasetImages: (id, params) => request("GET", `datasets/${id}/images?${q(params)}`),
  uploadDataset: (form) => request("POST", "datasets", { form }),
  cancelImport: (id) => request("POST", `datasets/${id}/cancel`),
  deleteDataset: (id, force = false) => request("DELETE", `datasets/${id}${force ? "?force=true" : ""}`),

  weights: () => request("GET", "weights"),
  uploadWeights: (form) => request("POST", "weights", { form }),

  runs: (params = {}) => request("GET", `runs?${q(params)}`),
  runGroups: (params = {}) => request("GET", `run-groups?${q(params)}`),
  run: (id) => request("GET", `runs/${id}`),
  createRun: (datasetId, config, name, processes) =>
    request("POST", "runs", { json: { dataset_id: datasetId, config, name, processes } }),
  retrain: (id, patch, name) => request("POST", `runs/${id}/retrain`, { json: { patch, name } }),
  cancel: (id) => request("POST", `runs/${id}/cancel`),
  resume: (id) => request("POST", `runs/${id}/resume`),
  deleteRun: (id) => request("DELETE", `runs/${id}`),
  importEmbeddings: (form) => request("POST", "embeddings", { form }),

  stats: (id) => request("GET", `runs/${id}/stats`),
  neighbors: (id, imageId, k = 10, within) => request("GET", `runs/${id}/neighbors?${q({ image_id: imageId, k, within })}`),
  query: (id, form) => request("POST", `runs/${id}/query`, { form }),
  history: (id) => request("GET", `runs/${id}/history`),
  failures: (id, split, sort, limit = 40) => request("GET", `runs/${id}/failures?${q({ split, sort, limit })}`),
  classPairs: (id, split) => request("GET", `runs/${id}/class-pairs?${q({ split })}`),
  selection: (id, imageIds, split) => request("POST", `runs/${id}/selection`, { json: { image_ids: imageIds, split } }),
  compare: (a, b, k = 10, limit = 20) => request("GET", `compare?${q({ a, b, k, limit })}`),

  sweepVariants: () => request("GET", "sweeps/variants"),
  sweeps: (params = {}) => request("GET", `sweeps?${q(params)}`),
  sweep: (id) => request("GET", `sweeps/${id}`),
  createSweep: (body) => request("POST", "sweeps", { json: body }),
  cancelSweep: (id) => request("POST", `sweeps/${id}/cancel`),
  resumeSweep: (id) => request("POST", `sweeps/${id}/resume`),

  /** Points of a run's map as typed arrays (binary format of docs/api.md). `params`: {n_neighbors, min_dist,
   * dim} (server defaults for those left out); `columns`: the names to fetch (all when null); `answered()` is
   * called when the server answers, before the body has arrived (a map being computed answers late). */
  async points(id, split, projection, params = {}, columns = null, answered = null) {
    const query = q({ split, projection, ...params, format: "binary", ...(columns ? { columns: columns.join(",") } : {}) });
    const response = await request("GET", `runs/${id}/points?${query}`, { raw: true });
    answered?.();
    return decodePoints(await response.arrayBuffer());
  },
};

/** A link to a download the server builds (checkpoint, embeddings, stats). */
export function exportUrl(id, what, format) {
  return `api/runs/${id}/export?${q({ what, format })}`;
}

const TYPES = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, int32: Int32Array, float32: Float32Array };
const NAN_CODE = 65535; // a quantised float column's code for a missing value (server/points_codec.py)

/** A column stored as byte planes (every row's byte 0, then byte 1, …) as a typed array of `Type`. */
function fromPlanes(bytes, Type, count) {
  const width = Type.BYTES_PER_ELEMENT;
  if (width === 1) return new Type(bytes.buffer, bytes.byteOffset, count);
  const out = new Uint8Array(count * width);
  for (let b = 0; b < width; b += 1) {
    const plane = bytes.subarray(b * count, (b + 1) * count);
    for (let i = 0, j = b; i < count; i += 1, j += width) out[j] = plane[i];
  }
  return new Type(out.buffer);  // little-endian bytes: every browser's typed arrays are little-endian
}

/** Decode the binary points body of docs/api.md: uint32 header length, JSON header, padding to 4, then each
 * column's byte planes; a column with a `range` holds uint16 codes of floats over [lo, hi] (NaN: 65535).
 * Returns {header fields…, columns: {name: typed array}}: floats as Float32Array, integers in their own width.
 * Columns listed in `absent` (no values, e.g. log|det J| without a flow layer) are left out. */
export function decodePoints(buffer) {
  const n = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const base = 4 + n + ((4 - ((4 + n) % 4)) % 4);
  const columns = {};
  for (const col of header.columns) {
    const Type = TYPES[col.dtype];
    if (!Type) throw new Error(`points column ${col.name} has dtype ${col.dtype}; the UI reads ${Object.keys(TYPES).join(", ")}`);
    const values = fromPlanes(new Uint8Array(buffer, base + col.offset, header.count * Type.BYTES_PER_ELEMENT), Type, header.count);
    columns[col.name] = col.range ? dequantise(values, col.range) : values;
  }
  return { ...header, absent: header.absent || [], columns };
}

function dequantise(codes, [lo, hi]) {
  const step = (hi - lo) / (NAN_CODE - 1);
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i += 1) out[i] = codes[i] === NAN_CODE ? NaN : lo + codes[i] * step;
  return out;
}

/** Follow a run's Server-Sent Events. Handlers: run(Run), progress(Progress), end(Run), error(Event).
 * Returns a function that closes the stream. */
export function followRun(id, handlers) {
  return follow(`api/runs/${id}/events`, ["run", "progress"], handlers);
}

/** Follow a dataset's import. Handlers: dataset(Dataset), progress(Progress), end(Dataset: ready, failed or
 * cancelled), error(Event). Returns a function that closes the stream. */
export function followDataset(id, handlers) {
  return follow(`api/datasets/${id}/events`, ["dataset", "progress"], handlers);
}

/** Follow a sweep's Server-Sent Events. Handlers: sweep(Sweep) on every change, end(Sweep), error(Event). */
export function followSweep(id, handlers) {
  return follow(`api/sweeps/${id}/events`, ["sweep"], handlers);
}

function follow(url, kinds, handlers) {
  const source = new EventSource(url);
  for (const kind of kinds) {
    source.addEventListener(kind, (ev) => handlers[kind]?.(JSON.parse(ev.data)));
  }
  source.addEventListener("end", (ev) => {
    source.close();
    handlers.end?.(JSON.parse(ev.data));
  });
  source.onerror = (ev) => {
    // EventSource reconnects by itself while the stream is live; report only a closed stream.
    if (source.readyState === EventSource.CLOSED) handlers.error?.(ev);
  };
  return () => source.close();
}

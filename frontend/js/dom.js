// Tiny DOM helpers: build elements declaratively and show the three states every panel has
// (loading, empty, error) the same way everywhere.

/** Create an element: el("button", {class: "primary", onclick: f}, "Start"). Children may be nodes,
 * strings, arrays or null (skipped). Attributes starting with "on" become listeners; `dataset` and `style`
 * objects are merged; boolean false/null attributes are omitted. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (tag === "img" && key === "src" && document.body.classList.contains("no-images")) continue; // views/run.js
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset" || key === "style") Object.assign(node[key], value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace all children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const loading = (what) => el("p", { class: "state loading", role: "status" }, `Loading ${what}…`);
export const empty = (message, ...extra) => el("div", { class: "state empty" }, el("p", {}, message), ...extra);

/** An error box that shows the server's {"error","detail"} text; `err` is an ApiError or any Error. */
export function errorBox(err, context = "") {
  const title = err.error || err.message || String(err);
  return el("div", { class: "state error", role: "alert" },
    el("strong", {}, context ? `${context}: ${title}` : title),
    err.detail ? el("p", {}, typeof err.detail === "string" ? err.detail : JSON.stringify(err.detail)) : null);
}

/** Format a number for tables: 3 significant decimals, "—" for missing values. */
export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}

/** A measured value with a fixed number of decimals ("1.000" beside "0.998", never "1"), "—" when missing. */
export function fixed(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  return Math.abs(value) >= 1e5 ? value.toExponential(2) : value.toFixed(digits);
}

/** A difference with its sign and the same decimals as the values ("+0.012", "−0.004", "0.000"). */
export function signed(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const text = fixed(Math.abs(value), digits);
  if (Number(text) === 0) return fixed(0, digits);
  return `${value > 0 ? "+" : "−"}${text}`;
}

const MAX_LABEL = 14;
/** A class name short enough for an axis tick ("a_very_long_cl…"); show the whole name on hover. */
export const shortName = (name) => (name.length > MAX_LABEL ? `${name.slice(0, MAX_LABEL - 1)}…` : name);

/** Seconds as "1 min 05 s" (for ETAs). */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${String(s % 60).padStart(2, "0")} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// The run-configuration form, generated from GET /api/components: the RunConfig JSON schema gives the plain
// fields (with their bounds, enums and help text: each field's description), the registries give the component
// choices and their parameters. What differs between two configs is the server's answer (GET/POST
// /api/config/diff); this module only words it.
// The same form starts a new run (Train tab) and "changes one setting and retrains" a finished run.
import { el, fill } from "./dom.js";

// Components are picked from registries; every other schema property is drawn generically.
const COMPONENT_FIELDS = new Set(["backbone", "loss", "miner", "distance", "regularizers"]);
// pretrained_weights is a local file path: CLI only, not the API; weights_id is the uploaded-weights list below
const HIDDEN_FIELDS = new Set(["pretrained_weights", "weights_id"]);
const MODEL_FIELDS = ["pretrained", "freeze_bn", "embedding_dim", "image_size"];

// Parts of the papers that are our reconstruction (SPEC: show R/S items as "approximation").
const APPROXIMATE = new Set(["density", "det"]);

const clone = (x) => JSON.parse(JSON.stringify(x));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const titleOf = (path, schema) => (schema.title || path.split(".").pop()).replace(/Config$/, "");

function resolve(schema, root) {
  return schema.$ref ? root.$defs[schema.$ref.split("/").pop()] : schema;
}

function setPath(obj, path, value) {
  const keys = path.split(".");
  let node = obj;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  node[keys.at(-1)] = value;
}

function getPath(obj, path) {
  return path.split(".").reduce((node, key) => (node == null ? undefined : node[key]), obj);
}

/** One input for a JSON-schema scalar (integer, number, boolean, enum, string; nullable via anyOf). */
function scalarInput(id, schema, value) {
  const variants = schema.anyOf || [schema];
  const nullable = variants.some((v) => v.type === "null");
  const s = variants.find((v) => v.type !== "null") || {};
  const choices = s.enum || (s.const !== undefined ? [s.const] : null); // Literal["x"] comes as a const
  if (choices) {
    const none = nullable ? [el("option", { value: "", selected: value == null }, "none")] : [];
    const select = el("select", { id }, none, choices.map((v) => el("option", { value: v, selected: v === value }, v)));
    return { input: select, read: () => (select.value === "" && nullable ? null : select.value) };
  }
  if (s.type === "boolean") {
    const box = el("input", { id, type: "checkbox", checked: Boolean(value) });
    return { input: box, read: () => box.checked };
  }
  if (s.type === "integer" || s.type === "number") {
    const lo = s.minimum ?? s.exclusiveMinimum;
    const hi = s.maximum ?? s.exclusiveMaximum;
    const box = el("input", { id, type: "number", value: value ?? "", min: lo ?? null, max: hi ?? null,
      step: s.type === "integer" ? "1" : "any", placeholder: nullable ? "auto" : null, required: !nullable });
    return { input: box, read: () => (box.value === "" ? null : Number(box.value)) };
  }
  const box = el("input", { id, type: "text", value: value ?? "" });
  return { input: box, read: () => (box.value === "" && nullable ? null : box.value) };
}

/** Inputs for a registry component's parameters; read() returns only values that differ from the default
 * or that the starting config set explicitly (so an untouched form yields an identical config). */
function paramInputs(prefix, component, startParams) {
  const fields = component.params.map((p) => {
    const id = `${prefix}-${component.name}-${p.name}`;
    const value = startParams?.[p.name] ?? p.default;
    const kind = { float: "number", int: "integer", bool: "boolean" }[p.type] || "string";
    const { input, read } = scalarInput(id, { type: kind }, value);
    if (kind === "string" && p.type === "any") input.title = "JSON value";
    const parse = () => {
      const v = read();
      if (p.type !== "any" || typeof v !== "string") return v;
      try { return JSON.parse(v); } catch { return v; }
    };
    return { p, parse, node: el("label", { for: id, title: p.help || null }, p.name, input) };
  });
  return {
    node: fields.length ? el("div", { class: "params" }, fields.map((f) => f.node)) : null,
    read() {
      const out = {};
      for (const { p, parse } of fields) {
        const v = parse();
        if (!same(v, p.default) || (startParams && p.name in startParams)) out[p.name] = v;
      }
      return out;
    },
  };
}

/** A component select (loss, miner, distance, backbone) with its parameter inputs, re-drawn on change. */
function componentField(prefix, label, path, components, start) {
  const id = `${prefix}-${path}`;
  const byName = Object.fromEntries(components.map((c) => [c.name, c]));
  const select = el("select", { id, "data-path": path === "backbone" ? path : `${path}.name` },
    components.map((c) => el("option", { value: c.name, selected: c.name === start.name }, c.name)));
  const summary = el("span", { class: "help" });
  const paramsBox = el("div");
  let params;
  const draw = () => {
    const comp = byName[select.value];
    params = paramInputs(prefix, comp, comp.name === start.name ? start.params : null);
    fill(summary, comp.summary, APPROXIMATE.has(comp.name) ? el("span", { class: "badge approx" }, "approximation") : null);
    fill(paramsBox, params.node);
  };
  select.addEventListener("change", draw);
  draw();
  return {
    nodes: [el("label", { for: id }, label), el("div", {}, select, " ", summary, paramsBox)],
    read: () => ({ name: select.value, params: params.read() }),
  };
}

function regularizerRows(prefix, components, start) {
  const started = Object.fromEntries(start.map((r) => [r.name, r]));
  const rows = components.map((comp) => {
    const cfg = started[comp.name];
    const id = `${prefix}-reg-${comp.name}`;
    const on = el("input", { id, type: "checkbox", checked: Boolean(cfg) });
    const weight = el("input", { id: `${id}-weight`, type: "number", min: 0, max: 1000, step: "any",
      value: cfg ? cfg.weight : comp.name === "det" ? 0.001 : 0.1, "aria-label": `${comp.name} weight λ` });
    const params = paramInputs(`${prefix}-reg`, comp, cfg?.params);
    const sync = () => { weight.disabled = !on.checked; };
    on.addEventListener("change", sync);
    sync();
    return {
      comp,
      node: el("div", { class: "reg-row" },
        el("label", { for: id }, on, comp.name,
          APPROXIMATE.has(comp.name) ? el("span", { class: "badge approx" }, "approximation") : null),
        el("label", {}, "λ", weight),
        el("div", {}, el("span", { class: "help" }, comp.summary), params.node)),
      read: () => (on.checked ? { name: comp.name, weight: Number(weight.value), params: params.read() } : null),
    };
  });
  // Keep the starting order so an untouched list compares equal to the run it came from.
  const rank = (name) => (name in started ? start.findIndex((r) => r.name === name) : start.length);
  return {
    node: el("div", {}, rows.map((r) => r.node)),
    read: () => rows.map((r) => r.read()).filter(Boolean).sort((a, b) => rank(a.name) - rank(b.name)),
  };
}

/** The uploaded weights files (GET /api/weights) as a select of ids; "none" is null. */
function weightsField(prefix, weights, startId, help) {
  const id = `${prefix}-weights_id`;
  const option = (w) => el("option", { value: w.id, selected: w.id === startId }, `${w.name} (${w.backbone})`);
  const select = el("select", { id, "data-path": "weights_id" },
    el("option", { value: "", selected: !startId }, "none"), weights.map(option));
  return {
    nodes: [el("label", { for: id }, "Weights file"),
      el("div", {}, select, el("span", { class: "help" }, ` ${help}`))],
    read: () => select.value || null,
    add(w) { select.append(option(w)); select.value = w.id; },
  };
}

/**
 * Build the form. `components` is GET /api/components; `start` a full RunConfig (defaults, or a run's config);
 * `weights` the uploaded weights files offered as a list (null: the start's choice is kept as is).
 * Returns {node, read(): RunConfig, markErrors(fields), addWeights(record), backbone()}.
 */
export function configForm(components, start, prefix = "cfg", weights = null) {
  const root = components.run_config.schema;
  const readers = []; // [path, read]
  const plain = (path, schema) => {
    const id = `${prefix}-${path.replaceAll(".", "-")}`;
    const { input, read } = scalarInput(id, schema, getPath(start, path));
    input.dataset.path = path;
    readers.push([path, read]);
    return [el("label", { for: id }, titleOf(path, schema)),
      el("div", {}, input, schema.description ? el("span", { class: "help" }, ` ${schema.description}`) : null)];
  };
  const objectFields = (key) => {
    const schema = resolve(root.properties[key], root);
    return Object.entries(schema.properties).map(([name, s]) => plain(`${key}.${name}`, s));
  };

  // RunConfig has no backbone parameters (weights come from `pretrained` or a file): offer the choice only.
  const backbones = components.backbones.map((c) => ({ ...c, params: [] }));
  const backbone = componentField(prefix, "Backbone", "backbone", backbones, { name: start.backbone, params: {} });
  const weightsChoice = weights
    ? weightsField(prefix, weights, start.weights_id, root.properties.weights_id.description) : null;
  const loss = componentField(prefix, "Loss", "loss", components.losses, start.loss);
  const miner = componentField(prefix, "Miner", "miner", components.miners, start.miner);
  const distance = componentField(prefix, "Distance", "distance", components.distances, start.distance);
  const normalize = plain("distance.normalize", resolve(root.properties.distance, root).properties.normalize);
  const regs = regularizerRows(prefix, components.regularizers, start.regularizers || []);

  const objects = Object.keys(root.properties).filter((k) => !COMPONENT_FIELDS.has(k) &&
    resolve(root.properties[k], root).type === "object" && resolve(root.properties[k], root).properties);
  const scalars = Object.keys(root.properties).filter((k) => !COMPONENT_FIELDS.has(k) && !HIDDEN_FIELDS.has(k) &&
    !objects.includes(k));
  const training = scalars.filter((k) => !MODEL_FIELDS.includes(k));
  const group = (legend, ...rows) => el("fieldset", {}, el("legend", {}, legend), el("div", { class: "form-grid" }, rows));

  const node = el("div", { class: "config-form" },
    group("Model", backbone.nodes, weightsChoice?.nodes, MODEL_FIELDS.filter((k) => k in root.properties).map((k) => plain(k, root.properties[k]))),
    group("Loss and miner", loss.nodes, miner.nodes),
    group("Distance", distance.nodes, normalize),
    el("fieldset", { class: "wide" }, el("legend", {}, "Regularizers (weight λ × term, added to the loss)"), regs.node),
    objects.map((k) => group(k === "flow" ? "Flow metric layer" : titleOf(k, resolve(root.properties[k], root)), objectFields(k))),
    group("Training", training.map((k) => plain(k, root.properties[k]))));

  return {
    node,
    read() {
      const cfg = clone(start);
      cfg.backbone = backbone.read().name;
      if (weightsChoice) cfg.weights_id = weightsChoice.read();
      cfg.loss = loss.read();
      cfg.miner = miner.read();
      cfg.distance = { ...cfg.distance, ...distance.read() }; // normalize is one of the plain readers
      cfg.regularizers = regs.read();
      for (const [path, read] of readers) setPath(cfg, path, read());
      return cfg;
    },
    addWeights: (record) => weightsChoice?.add(record),
    backbone: () => backbone.read().name,
    /** Mark the inputs named by a 422 answer's `fields` (loc like ["body","config","loss","name"]). */
    markErrors(fields = []) {
      for (const bad of node.querySelectorAll("[aria-invalid]")) bad.removeAttribute("aria-invalid");
      for (const f of fields) {
        const loc = (f.loc || []).filter((part) => !["body", "config", "patch"].includes(part));
        for (let n = loc.length; n > 0; n -= 1) {
          const input = node.querySelector(`[data-path="${loc.slice(0, n).join(".")}"]`);
          if (input) { input.setAttribute("aria-invalid", "true"); input.title = f.msg; input.focus(); break; }
        }
      }
    },
  };
}

/** "loss.name: triplet → proxy_anchor" lines for the `changes` of a GET/POST /api/config/diff answer. */
export function describeChanges(changes) {
  return changes.map(({ path, before, after }) => `${path}: ${short(before)} → ${short(after)}`);
}

function short(value) {
  if (Array.isArray(value)) return value.length ? value.map((v) => (v.name ? `${v.name}(${v.weight})` : JSON.stringify(v))).join(", ") : "none";
  if (value === null || value === undefined) return "default";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

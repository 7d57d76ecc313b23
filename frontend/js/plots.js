// Plotly helpers. Plotly.js is loaded as a classic script from /static/vendor/plotly.min.js (served from the
// installed plotly package: the app works offline) and is read from `window.Plotly`.
//
// Maps are scattergl traces of typed arrays straight from the binary points endpoint: ONE trace coloured by an
// array, or — for many points in a few colours — one single-colour trace per colour (`groups`: Plotly turns a
// per-point colour into rgba point by point, ~10 µs each; a trace's one colour costs nothing), plus one tiny
// "highlight" trace for the pointed/selected image. One WebGL context per map (keep ≤ 4 WebGL plots on a page).
// Each points trace carries its first position in the map's drawn order as `meta` (onPoints reads it).

const Plotly = () => {
  if (!window.Plotly) throw new Error("Plotly.js did not load: /static/vendor/plotly.min.js is missing");
  return window.Plotly;
};

const CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "toggleSpikelines"],
};

const FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1f2933" };

/** A layout with the house margins and font; `extra` is merged on top (shallowly, per axis). */
export function layout(title, extra = {}) {
  return {
    title: title ? { text: title, x: 0.01, xanchor: "left", font: { size: 14 } } : undefined,
    font: FONT,
    margin: { l: 56, r: 16, t: title ? 36 : 12, b: 44 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    hovermode: "closest",
    ...extra,
  };
}

// Tableau-like categorical palette; past 20 classes, colours walk the hue circle by the golden angle.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ff7f0e", "#98df8a", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#17becf"];

export function classColor(i) {
  return i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360}, 55%, 50%)`;
}

/** A stepped colourscale so that integer k ∈ [0, n) gets classColor(k) with cmin = −0.5, cmax = n − 0.5. */
function discreteScale(colors) {
  const n = colors.length;
  return colors.flatMap((c, i) => [[i / n, c], [(i + 1) / n, c]]);
}

/**
 * Marker settings for one colouring.
 * kind "category": `values` are integer codes into `labels` (class names, or ["wrong","right"]).
 * kind "continuous": `values` are floats; NaN points are drawn grey by Plotly.
 */
export function markerFor({ kind, values, labels = [], colors = null, title = "" }, size = 5) {
  if (kind === "category") {
    const palette = colors || labels.map((_, i) => classColor(i));
    const many = labels.length > 24;
    return {
      size, color: values, colorscale: discreteScale(palette), cmin: -0.5, cmax: labels.length - 0.5,
      showscale: true, opacity: 0.85,
      colorbar: {
        title: { text: title }, thickness: 12, len: 0.95,
        tickvals: many ? undefined : labels.map((_, i) => i), ticktext: many ? undefined : labels,
      },
    };
  }
  return {
    size, color: values, colorscale: "Viridis", showscale: true, opacity: 0.85,
    colorbar: { title: { text: title }, thickness: 12, len: 0.95 },
  };
}

// Maps keep Plotly's box and lasso selection (the selection panel reads them).
const MAP_CONFIG = { ...CONFIG, modeBarButtonsToRemove: ["toggleSpikelines"] };

/** Draw (or redraw) a projection map: trace 0 = all points — or, with `groups` [{start, end, color}] (2-D only),
 * one trace per group of the points at positions [start, end), drawn in its colour with `marker`'s size and
 * opacity — then the highlighted points (`ring`: their positions {x, y, z}), then the `density` heat map of a
 * sampled map. `selected`: positions
 * of points drawn as selected (the others dimmed), null for no selection; `dragmode`: pan, select, lasso.
 * With `z` (a 3-D map) both traces are scatter3d (rotate by dragging; no box/lasso there): the selection is
 * shown by dimming the other points' colour. */
export function drawMap(div, { x, y, z = null, marker, groups = null, title, xTitle = "", yTitle = "", zTitle = "", selected = null, dragmode = "pan", density = null, ring: marked = null }) {
  const ring = { size: 16, color: "rgba(0,0,0,0)", line: { color: "#111", width: 2.5 } };
  const at = marked || { x: [], y: [], z: [] };
  if (z) {
    const dim = selected ? { ...marker, opacity: 0.35 } : marker;  // scatter3d has no selectedpoints
    const points = { type: "scatter3d", mode: "markers", x, y, z, marker: { ...dim, size: 3 }, hoverinfo: "none", showlegend: false, meta: 0 };
    const highlight = { type: "scatter3d", mode: "markers", x: at.x, y: at.y, z: at.z || [], hoverinfo: "skip", showlegend: false,
      marker: { size: 8, color: "rgba(0,0,0,0)", line: { color: "#111", width: 2 } } };
    const axis = (text) => ({ title: { text }, showticklabels: false, showspikes: false });
    return Plotly().react(div, [points, highlight],
      layout(title, { scene: { xaxis: axis(xTitle), yaxis: axis(yTitle), zaxis: axis(zTitle), dragmode: "orbit" } }),
      MAP_CONFIG);
  }
  const trace = (start, end, mark) => ({ type: "scattergl", mode: "markers", x: groups ? x.subarray(start, end) : x,
    y: groups ? y.subarray(start, end) : y, marker: mark, hoverinfo: "none", showlegend: false, meta: start, unselected: { marker: { opacity: 0.15 } },
    selectedpoints: selected && selected.filter((i) => i >= start && i < end).map((i) => i - start) });
  const points = groups
    ? groups.map(({ start, end, color }) => trace(start, end, { size: marker.size, opacity: marker.opacity, color }))
    : [trace(0, x.length, marker)];
  const highlight = { type: "scattergl", mode: "markers", x: at.x, y: at.y, hoverinfo: "skip", showlegend: false, marker: ring };
  const axis = (text) => ({ title: { text }, zeroline: false, showgrid: false, showticklabels: false });
  // A sampled map: the density of all points (a 2-D histogram, explore/sample.js) under the scatter.
  const heat = density ? [{ type: "heatmap", z: density.z, x0: density.x0, dx: density.dx, y0: density.y0, dy: density.dy,
    colorscale: [[0, "#eef1f5"], [1, "#5b6b80"]], showscale: false, hoverinfo: "skip", zsmooth: false }] : [];
  return Plotly().react(div, [...points, highlight, ...heat],
    layout(title, { xaxis: axis(xTitle), yaxis: axis(yTitle), dragmode: dragmode || "pan" }),
    MAP_CONFIG);
}

/** Ring the positions {x, y, z} (arrays; z null on a 2-D map) in the highlight trace (the first without `meta`). */
export function highlight(div, { x, y, z = null }) {
  if (!div.data) return;
  const update = { x: [x], y: [y] };
  if (z) update.z = [z];
  Plotly().restyle(div, update, [div.data.findIndex((t) => t.meta === undefined)]);
}

export function react(div, data, lay, config = CONFIG) {
  return Plotly().react(div, data, lay, config);
}

export function purge(div) {
  if (window.Plotly && div) window.Plotly.purge(div);
}

export function downloadPng(div, filename) {
  return Plotly().downloadImage(div, { format: "png", filename, width: div.clientWidth || 900,
    height: div.clientHeight || 500, scale: 2 });
}

/** Listen to hover/unhover/click on a map; handlers get (position, mouseEvent), the position in the map's drawn
 * order (a points trace's `meta` plus the point's index in it). Only points traces count.
 * `selected(pointIndices, event)` follows a box / lasso selection, `deselect()` its clearing. A 3-D scene's events
 * carry no mouse event and number points by `pointNumber`: the last mouse position over the div stands in. */
export function onPoints(div, { hover, unhover, click, selected, deselect }) {
  const offset = (p) => div.data[p.curveNumber]?.meta;
  const first = (ev) => ev.points.find((p) => offset(p) !== undefined);
  const row = (p) => offset(p) + (p.pointIndex ?? p.pointNumber);
  let mouse = null;
  div.addEventListener("mousemove", (ev) => { mouse = ev; });
  if (hover) div.on("plotly_hover", (ev) => { const p = first(ev); if (p) hover(row(p), ev.event || mouse); });
  if (unhover) div.on("plotly_unhover", () => unhover());
  if (click) div.on("plotly_click", (ev) => { const p = first(ev); if (p) click(row(p), ev.event || mouse); });
  if (selected) div.on("plotly_selected", (ev) => { if (ev) selected(ev.points.filter((p) => offset(p) !== undefined).map(row), ev); });
  if (deselect) div.on("plotly_deselect", () => deselect());
}

// The class legend under a map: one button per class in its map colour — click hides or shows the class,
// alt-click or double-click (or the search box, which completes class names) isolates it — plus "only wrong@1".
// It filters every MapView given (both maps of a comparison), which then redraw.
import { el, fill } from "../dom.js";
import { classColor } from "../plots.js";
import { classColors } from "./map.js";

/** Returns {node, update(), isolate(labels)}; call update() after the views load new points. */
export function classLegend(views, { onChange = () => {} } = {}) {
  const node = el("div", { class: "legend", role: "group", "aria-label": "classes: click to hide, alt-click or double-click to isolate" });
  const redraw = () => { views.forEach((v) => v.points && v.draw()); update(); onChange(); };
  const hidden = () => views[0].hidden;
  const setHidden = (labels) => views.forEach((v) => { v.hidden = new Set(labels); });
  const present = () => [...new Set(views.flatMap((v) => (v.points ? classColors(v.points).present : [])))].sort((a, b) => a - b);
  const names = () => views.find((v) => v.points)?.points.class_names || [];

  function isolate(labels) {
    const keep = new Set(labels);
    setHidden(present().filter((l) => !keep.has(l)));
    redraw();
  }
  function toggle(label) {
    const next = new Set(hidden());
    if (next.has(label)) next.delete(label); else next.add(label);
    setHidden(next);
    redraw();
  }

  const search = el("input", { type: "search", id: `${views[0].div.id}-class-search`, list: `${views[0].div.id}-class-names`,
    placeholder: "class name", autocomplete: "off" });
  const options = el("datalist", { id: `${views[0].div.id}-class-names` });
  search.addEventListener("change", () => {
    const label = names().indexOf(search.value.trim());
    if (label >= 0) isolate([label]);
  });
  const wrong = el("input", { type: "checkbox", id: `${views[0].div.id}-wrong-only`, onchange: () => {
    views.forEach((v) => { v.wrongOnly = wrong.checked; });
    redraw();
  } });

  const items = el("div", { class: "legend-items" });
  const showAll = el("button", { type: "button", class: "link", hidden: true, onclick: () => { setHidden([]); redraw(); } });
  fill(node, el("label", { for: search.id }, "Find class", search), options,
    el("label", { for: wrong.id }, wrong, "only wrong@1"), items, showAll);  // after the items: no shift under a double-click

  /** Rebuild the buttons when the classes change; otherwise only their state (a double-click needs the
   * element it started on to stay). */
  function update() {
    const labels = present();
    const classNames = names();
    if (items.dataset.labels !== labels.join(",")) {
      items.dataset.labels = labels.join(",");
      fill(options, labels.map((l) => el("option", { value: classNames[l] })));
      fill(items, labels.map((l) => el("button", {
        type: "button", class: "legend-item", "data-label": l,
        title: `${classNames[l]}: click to hide or show; alt-click or double-click to show only this class`,
        onclick: (ev) => (ev.altKey ? isolate([l]) : ev.detail > 1 ? null : toggle(l)), ondblclick: () => isolate([l]),
      }, el("span", { class: "swatch", style: { background: classColor(l) } }), el("span", { class: "name" }, classNames[l]))));
    }
    for (const button of items.children) button.setAttribute("aria-pressed", String(!hidden().has(Number(button.dataset.label))));
    showAll.hidden = !hidden().size;
    showAll.textContent = `show all (${hidden().size} hidden)`;
  }
  return { node, update, isolate };
}

// The class legend under a map. Up to 40 classes: one button per class in its map colour — click hides or
// shows the class, alt-click or double-click (or the search box, which completes class names) isolates it.
// More classes cannot be told apart by colour or listed as buttons: the search box then highlights a class
// (distinct colour, every other class grey) and the buttons list only the highlighted classes (click one to
// drop it). "only wrong@1" filters either way. It filters every MapView given (both maps of a comparison).
import { el, fill } from "../dom.js";
import { classColors, classColorOn } from "./mapcolor.js";

const BUTTONS = 40; // classes listed as buttons at most

/** Returns {node, update(), isolate(labels), highlight(labels)}; call update() after the views load new points. */
export function classLegend(views, { onChange = () => {} } = {}) {
  const node = el("div", { class: "legend", role: "group", "aria-label": "classes: click to hide, alt-click or double-click to isolate" });
  const redraw = () => { views.forEach((v) => v.points && v.draw()); update(); onChange(); };
  const hidden = () => views[0].hidden;
  const focus = () => views[0].focus;
  const setHidden = (labels) => views.forEach((v) => { v.hidden = new Set(labels); });
  const setFocus = (labels) => views.forEach((v) => { v.focus = [...new Set(labels)]; });
  const present = () => {
    const seen = new Set(views.flatMap((v) => (v.points ? classColors(v.points).present : [])));
    return [...seen].sort((a, b) => a - b);
  };
  const names = () => views.find((v) => v.points)?.points.class_names || [];
  const many = () => present().length > BUTTONS;

  /** Show only `labels`; past 40 classes, highlight them instead (hiding thousands of classes hides the map). */
  function isolate(labels) {
    if (many()) { highlight(labels); return; }
    const keep = new Set(labels);
    setHidden(present().filter((l) => !keep.has(l)));
    redraw();
  }
  /** Draw `labels` in distinct colours and every other class grey (empty: the usual colours). */
  function highlight(labels) {
    setFocus(labels.filter((l) => l >= 0));
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
    if (label < 0) return;
    if (many()) highlight([...focus(), label]); else isolate([label]);
  });
  const wrong = el("input", { type: "checkbox", id: `${views[0].div.id}-wrong-only`, onchange: () => {
    views.forEach((v) => { v.wrongOnly = wrong.checked; });
    redraw();
  } });

  const items = el("div", { class: "legend-items" });
  const manyNote = el("p", { class: "help", id: `${views[0].div.id}-legend-many`, hidden: true });
  const showAll = el("button", { type: "button", class: "link", hidden: true, onclick: () => { setHidden([]); redraw(); } });
  const clearFocus = el("button", { type: "button", class: "link", hidden: true, onclick: () => highlight([]) }, "clear highlight");
  fill(node, el("label", { for: search.id }, "Find class", search), options,
    el("label", { for: wrong.id }, wrong, "only wrong@1"), manyNote, items, showAll, clearFocus);  // after the items: no shift under a double-click

  const button = (l, classNames, count, title, onclick, ondblclick = null) => el("button", {
    type: "button", class: "legend-item", "data-label": l, title, onclick, ondblclick,
  }, el("span", { class: "swatch", style: { background: classColorOn(l, count, focus()) } }), el("span", { class: "name" }, classNames[l]));

  /** Rebuild the buttons when the classes (or, past 40, the highlighted ones) change; otherwise only their
   * state (a double-click needs the element it started on to stay). */
  function update() {
    const labels = present();
    const classNames = names();
    const count = classNames.length;
    const isMany = labels.length > BUTTONS;
    const listed = isMany ? focus() : labels;
    const signature = `${labels.length}:${labels.at(-1)}:${listed.join(",")}:${focus().join(",")}`;
    if (items.dataset.signature !== signature) {
      if (options.dataset.labels !== `${labels.length}:${labels.at(-1)}`) {
        options.dataset.labels = `${labels.length}:${labels.at(-1)}`;
        fill(options, labels.map((l) => el("option", { value: classNames[l] })));
      }
      items.dataset.signature = signature;
      fill(items, isMany
        ? listed.map((l) => button(l, classNames, count, `${classNames[l]}: highlighted; click to drop it`, () => highlight(focus().filter((f) => f !== l))))
        : listed.map((l) => button(l, classNames, count, `${classNames[l]}: click to hide or show; alt-click or double-click to show only this class`,
          (ev) => (ev.altKey ? isolate([l]) : ev.detail > 1 ? null : toggle(l)), () => isolate([l]))));
    }
    for (const b of items.children) b.setAttribute("aria-pressed", String(!hidden().has(Number(b.dataset.label))));
    manyNote.hidden = !isMany;
    manyNote.textContent = `${labels.length.toLocaleString("en-US")} classes: coloured by hue, not one colour each. Find a class to highlight it (every other class grey).`;
    showAll.hidden = !hidden().size;
    showAll.textContent = `show all (${hidden().size} hidden)`;
    clearFocus.hidden = !focus().length;
  }
  return { node, update, isolate, highlight };
}

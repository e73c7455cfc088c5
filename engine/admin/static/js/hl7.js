// One content layer: HL7 as a table per segment (field, name, value), or the text as sent.
import { h } from "./dom.js";

function segmentTable(segment, index) {
  const rows = segment.fields.map((f) => h("tr", {},
    h("td", { class: "field" }, `${segment.id}-${f.n}`),
    h("td", { class: "name" }, f.name || ""),
    h("td", { class: "value" }, f.value)));
  return h("div", { class: "segment", dataset: { segment: segment.id, index } },
    h("h4", {}, segment.id),
    h("table", {}, h("tbody", {}, rows)));
}

export function renderLayer(layer) {
  const text = h("pre", { class: "hl7", "data-testid": "layer-text" },
    (layer.text || "").split("\r").join("\n"));
  if (layer.format !== "hl7" || !layer.segments) return h("div", {}, text);
  const segments = h("div", { "data-testid": "segments" },
    layer.segments.map((s, i) => segmentTable(s, i)));
  let showText = false;
  const body = h("div", {}, segments);
  const toggle = h("button", {
    type: "button",
    onclick: () => {
      showText = !showText;
      body.replaceChildren(showText ? text : segments);
      toggle.textContent = showText ? "Show fields" : "Show text";
    },
  }, "Show text");
  return h("div", {}, h("div", { class: "toolbar" }, toggle), body);
}

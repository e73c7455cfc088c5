// A dry run's trace (POST /api/channels/<name>/try): the outcome, each step with its
// field-level changes, each destination's payload and the mapped layers.
import { h, pill } from "./dom.js";
import { renderLayer } from "./hl7.js";

const show = (value) => (value === null || value === undefined ? "–" : JSON.stringify(value));

function changeRow(c) {
  if (c.kind === "segment added") {
    return h("tr", { class: "added" }, h("td", { class: "field" }, c.path),
      h("td", { colspan: 2 }, `segment added: ${c.after}`));
  }
  if (c.kind === "segment removed") {
    return h("tr", { class: "removed" }, h("td", { class: "field" }, c.path),
      h("td", { colspan: 2 }, `segment removed: ${c.before}`));
  }
  if (c.kind === "segment moved") {
    return h("tr", {}, h("td", { class: "field" }, c.path),
      h("td", { colspan: 2 }, `segment moved: ${c.before} → ${c.after}`));
  }
  return h("tr", {}, h("td", { class: "field" }, c.path), h("td", { class: "value" }, show(c.before)),
    h("td", { class: "value" }, `→ ${show(c.after)}`));
}

function step(s) {
  const changes = s.changes.length
    ? h("table", { "data-testid": "try-changes" }, h("tbody", {}, s.changes.map(changeRow))) : "";
  return h("li", { "data-testid": "try-step", dataset: { scope: s.scope, result: s.result } },
    h("span", { class: "muted" }, `[${s.scope}] `), h("strong", {}, s.name), " ",
    pill(s.result, s.result === "error" ? "ERROR" : s.result === "filtered" ? "stopped" : "SENT"),
    s.reason ? h("span", { class: "error" }, ` ${s.reason}`) : "", changes);
}

function outcome(t) {
  const failed = t.steps.find((s) => s.result === "error");
  const detail = t.status === "FILTERED" || t.status === "ERROR" || t.status === "REFUSED"
    ? [failed ? ` at [${failed.scope}] ${failed.name}` : "", t.error ? `: ${t.error}` : ""].join("")
    : ` to ${t.deliveries.length} destination(s)`;
  return h("p", { "data-testid": "try-outcome" }, pill(t.status), detail);
}

export function renderTrace(t) {
  const out = h("div", { "data-testid": "try-result" },
    t.masked ? h("span", { class: "pill stopped", "data-testid": "masked" }, "PHI masked") : "",
    outcome(t));
  if (t.steps.length) {
    out.append(h("h4", {}, "Steps"), h("ol", { class: "steps" }, t.steps.map(step)));
  }
  for (const d of t.deliveries) {
    out.append(h("div", { "data-testid": "try-delivery", dataset: { destination: d.destination } },
      h("h4", {}, `→ ${d.destination}`, d.raw ? h("span", { class: "muted" }, " (the message as received)") : ""),
      renderLayer(d.payload)));
  }
  for (const layer of t.layers) {
    out.append(h("div", { "data-testid": "try-layer" }, h("h4", {}, `layer ${layer.name}`),
      renderLayer(layer)));
  }
  return out;
}

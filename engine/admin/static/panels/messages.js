// Message browser: search (channel, status, type, control id, accession, dates), reprocess,
// and the viewer of one message with every content layer (#/messages/<id>).
import { query } from "../js/api.js";
import { clear, h, pill, table, when } from "../js/dom.js";
import { renderLayer } from "../js/hl7.js";
import { deliveryAction } from "./queues.js";

const STATUSES = ["", "RECEIVED", "FILTERED", "TRANSFORMED", "QUEUED", "SENT", "ERROR"];
const FILTERS = ["channel", "status", "type", "control_id", "accession", "since", "until"];
// Viewers may not search by identifiers (the API answers 403): their form leaves them out.
const IDENTIFIERS = ["control_id", "accession"];
const filtersFor = (ctx) => FILTERS.filter((f) => !(ctx.session.masked && IDENTIFIERS.includes(f)));

function field(name, params, extra = {}) {
  if (name === "status") {
    return h("label", {}, "status", h("select", { name },
      STATUSES.map((s) => h("option", { value: s, selected: params.get(name) === s }, s || "any"))));
  }
  return h("label", {}, name.replace("_", " "),
    h("input", { name, value: params.get(name) || "", size: 12, ...extra }));
}

async function reprocess(ctx, ids, done) {
  if (!ids.length) return;
  try {
    const r = await ctx.api("/api/messages/reprocess", { method: "POST", body: { ids } });
    done(`reprocessing ${r.reprocessed} of ${r.requested} message(s)`);
  } catch (err) {
    done(`reprocess failed: ${err.message}`);
  }
}

function searchView(root, ctx) {
  const params = ctx.route.params;
  const form = h("form", { class: "toolbar", "data-testid": "message-search" },
    filtersFor(ctx).map((f) => field(f, params, f === "since" || f === "until" ? { placeholder: "2026-11-30" } : {})),
    h("button", { type: "submit", class: "primary" }, "Search"));
  const note = h("span", { class: "muted", "data-testid": "note" });
  const results = h("div", { class: "card" });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    ctx.navigate(`#/messages${query(Object.fromEntries(new FormData(form).entries()))}`);
  });
  root.append(h("h2", {}, "Messages"), form, results);
  const selected = new Set();
  const columns = [
    ctx.can("reprocess_messages") ? { title: "", value: (m) => h("input", {
      type: "checkbox", onchange: (ev) => (ev.target.checked ? selected.add(m.id) : selected.delete(m.id)),
    }) } : null,
    { title: "ID", num: true, value: (m) => h("a", { href: `#/messages/${m.id}` }, String(m.id)) },
    { title: "Received", value: (m) => when(m.received_at) },
    { title: "Channel", value: (m) => m.channel },
    { title: "Status", value: (m) => pill(m.status) },
    { title: "Type", value: (m) => m.message_type || "–" },
    { title: "Control ID", value: (m) => m.control_id || "–" },
    { title: "Error", value: (m) => h("span", { class: "error" }, m.error || "") },
  ].filter(Boolean);
  (async () => {
    const q = Object.fromEntries(filtersFor(ctx).map((f) => [f, params.get(f)]));
    const data = await ctx.api(`/api/messages${query({ ...q, limit: 200 })}`);
    const bar = h("div", { class: "toolbar" }, note);
    if (ctx.can("reprocess_messages")) {
      bar.prepend(h("button", { onclick: () => reprocess(ctx, [...selected], (t) => { note.textContent = t; }) },
        "Reprocess selected"));
    }
    clear(results).append(bar, table(columns, data.messages, {
      testid: "message-list", onRow: (m) => ctx.navigate(`#/messages/${m.id}`), empty: "no messages match",
    }));
  })().catch((err) => results.append(h("p", { class: "error" }, err.message)));
}

function summary(m) {
  const kv = [["Channel", m.channel], ["Status", pill(m.status)], ["Type", m.message_type],
    ["Control ID", m.control_id], ["Received", when(m.received_at)], ["Key", m.key],
    ["Duplicate", m.duplicate ? "yes" : "no"], ["Error", m.error]];
  return h("dl", { class: "kv" }, kv.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function messageView(root, ctx, id) {
  const m = await ctx.api(`/api/messages/${encodeURIComponent(id)}`);
  const note = h("span", { class: "muted" });
  const head = h("div", { class: "toolbar" }, h("h2", {}, `Message ${m.id}`),
    m.masked ? h("span", { class: "pill stopped", "data-testid": "masked" }, "PHI masked") : "", note);
  if (ctx.can("reprocess_messages")) {
    head.append(h("button", { onclick: () => reprocess(ctx, [m.id], (t) => { note.textContent = t; }) },
      "Reprocess"));
  }
  const layerBox = h("div", { "data-testid": "layer" });
  const tabs = h("div", { class: "tabs", "data-testid": "layers" });
  const pick = (i) => {
    for (const [j, b] of [...tabs.children].entries()) b.classList.toggle("active", i === j);
    layerBox.replaceChildren(renderLayer(m.layers[i]));
  };
  m.layers.forEach((layer, i) => tabs.append(h("button", { onclick: () => pick(i) },
    `${layer.name} (${layer.size} B)`)));
  const act = (d, verb) => async () => {
    try {
      const after = await deliveryAction(ctx, d.id, verb);
      if (after) await messageView(clear(root), ctx, id);
    } catch (err) { note.textContent = `${verb} failed: ${err.message}`; }
  };
  // Skip or cancel a queued delivery, retry a failed one (operators; each asks why).
  const verbs = (d) => (d.status === "QUEUED" ? ["skip", "cancel"] : d.status === "ERROR" ? ["retry"] : []);
  const deliveries = table([
    { title: "Destination", value: (d) => d.destination },
    { title: "Status", value: (d) => pill(d.status) },
    { title: "Attempts", num: true, value: (d) => String(d.attempts) },
    { title: "Error", value: (d) => d.error || "" },
    { title: "", value: (d) => verbs(d).filter((v) => ctx.can(`${v}_delivery`)).map((v) => h("button",
      { onclick: act(d, v), "data-action": v }, v[0].toUpperCase() + v.slice(1))) },
  ], m.deliveries, { empty: "no deliveries", testid: "delivery-list" });
  root.append(head, h("div", { class: "card" }, summary(m)),
    h("h3", {}, "Deliveries"), deliveries, h("h3", {}, "Content"), tabs, layerBox);
  if (m.layers.length) pick(0);
}

export async function render(root, ctx) {
  const id = ctx.route.rest[0];
  if (id) return messageView(root, ctx, id);
  return searchView(root, ctx);
}

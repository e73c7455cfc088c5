// Studies, orders and what is still unmatched; complete a study now or let it go study-only.
import { clear, h, pill, table, when } from "../js/dom.js";

async function act(ctx, uid, verb, note) {
  try {
    await ctx.api(`/api/studies/${encodeURIComponent(uid)}/${verb}`, { method: "POST" });
    note.textContent = `${verb}: ${uid}`;
  } catch (err) {
    note.textContent = `${verb} failed: ${err.message}`;
  }
}

function studiesTable(ctx, rows, note, testid) {
  return table([
    { title: "State", value: (s) => pill(s.state) },
    { title: "Accession", value: (s) => s.accession || "–" },
    { title: "Patient", value: (s) => s.patient_id || "–" },
    { title: "Modality", value: (s) => s.modality || "–" },
    { title: "Series", num: true, value: (s) => String(s.series_count) },
    { title: "Instances", num: true, value: (s) => String(s.instance_count) },
    { title: "Last instance", value: (s) => when(s.last_at) },
    { title: "Study UID", value: (s) => s.uid },
    { title: "", value: (s) => (ctx.can("complete_study") ? (s.state === "receiving"
      ? h("button", { onclick: () => act(ctx, s.uid, "complete", note) }, "Complete now")
      : h("button", { onclick: () => act(ctx, s.uid, "proceed", note) }, "Proceed study-only")) : "") },
  ], rows, { testid, empty: "none" });
}

function ordersTable(rows, testid) {
  return table([
    { title: "ID", num: true, value: (o) => String(o.id) },
    { title: "Control", value: (o) => o.control },
    { title: "Status", value: (o) => (o.cancelled ? pill("cancelled") : o.status || "–") },
    { title: "Accession", value: (o) => o.accession || "–" },
    { title: "Patient", value: (o) => o.patient_id || "–" },
    { title: "Priority", value: (o) => o.priority || "–" },
    { title: "Procedure", value: (o) => `${o.procedure_code || ""} ${o.procedure_text || ""}` },
    { title: "Received", value: (o) => when(o.created_at) },
  ], rows, { testid, empty: "none" });
}

export async function render(root, ctx) {
  const note = h("span", { class: "muted" });
  const box = h("div", {});
  root.append(h("div", { class: "toolbar" }, h("h2", {}, "Studies & orders"), note), box);
  const [studies, orders, unmatched] = await Promise.all([
    ctx.api("/api/studies?limit=200"), ctx.api("/api/orders?limit=200"), ctx.api("/api/unmatched")]);
  clear(box).append(
    h("h3", {}, "Unmatched"),
    h("div", { class: "card" },
      h("p", { class: "muted" }, `waiting longer than ${unmatched.older_than_secs} s`),
      ordersTable(unmatched.orders, "unmatched-orders"),
      studiesTable(ctx, unmatched.studies, note, "unmatched-studies")),
    h("h3", {}, "Studies"), h("div", { class: "card" }, studiesTable(ctx, studies.studies, note, "study-list")),
    h("h3", {}, "Orders"), h("div", { class: "card" }, ordersTable(orders.orders, "order-list")));
}

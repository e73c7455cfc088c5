// Cases (an order joined with its complete study) and one case's timeline with timings.
import { clear, h, pill, secs, table, when } from "../js/dom.js";

function priority(c) {
  const p = (c.priority || "").toUpperCase();
  return p === "S" || p === "STAT" ? pill("STAT", "stat") : (p || "–");
}

async function list(root, ctx) {
  const box = h("div", { class: "card" });
  root.append(h("h2", {}, "Cases"), box);
  const data = await ctx.api("/api/cases?limit=200");
  clear(box).append(table([
    { title: "Case", num: true, value: (c) => h("a", { href: `#/cases/${c.id}` }, String(c.id)) },
    { title: "State", value: (c) => pill(c.state) },
    { title: "Priority", value: priority },
    { title: "Accession", value: (c) => c.accession || "–" },
    { title: "Patient", value: (c) => c.patient_id || "–" },
    { title: "Modality", value: (c) => c.modality || "–" },
    { title: "Procedure", value: (c) => c.procedure_code || "–" },
    { title: "Created", value: (c) => when(c.created_at) },
  ], data.cases, { testid: "case-list", onRow: (c) => ctx.navigate(`#/cases/${c.id}`), empty: "no cases yet" }));
}

function step(s, ctx) {
  const detail = Object.entries(s.detail || {}).map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`).join(" · ");
  const link = s.detail && s.detail.message_id && ctx.can("get_message")
    ? h("a", { href: `#/messages/${s.detail.message_id}` }, " message") : "";
  return h("li", { dataset: { step: s.step } },
    h("strong", {}, s.step), link,
    h("div", { class: "when" }, `${when(s.at)}  (+${secs(s.since_previous_secs)}, ${secs(s.since_start_secs)} from start)`),
    detail ? h("div", { class: "muted" }, detail) : "");
}

async function detail(root, ctx, id) {
  const data = await ctx.api(`/api/cases/${encodeURIComponent(id)}`);
  const c = data.case;
  root.append(h("div", { class: "toolbar" }, h("h2", {}, `Case ${c.id}`), pill(c.state), priority(c)),
    h("div", { class: "card" }, h("dl", { class: "kv" },
      [["Accession", c.accession], ["Patient", c.patient_id], ["Study", c.study_uid],
        ["Modality", c.modality], ["Body part", c.body_part], ["Procedure", c.procedure_code],
        ["Revision", c.revision]].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]))),
    h("h3", {}, "Timeline"),
    h("div", { class: "card" }, h("ol", { class: "timeline", "data-testid": "timeline" },
      data.timeline.map((s) => step(s, ctx)))));
}

export async function render(root, ctx) {
  const id = ctx.route.rest[0];
  return id ? detail(root, ctx, id) : list(root, ctx);
}

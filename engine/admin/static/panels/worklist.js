// The reading worklist: STAT first, then age. AI findings are a second read: each one can be
// accepted, rejected or modified here; "Read" takes a case off the list.
import { clear, h, pill, secs, table } from "../js/dom.js";

function priority(row) {
  const raised = row.priority !== row.order_priority;
  return h("span", {}, pill(row.priority, row.priority.toLowerCase()),
    raised ? h("span", { class: "muted", title: `ordered ${row.order_priority}` }, " ↑AI") : "");
}

function flags(row, ctx, refresh) {
  if (!row.ai_flags.length) return "–";
  const verdict = (f, v) => async () => {
    const body = { model: f.model, version: f.version, code: f.code, verdict: v };
    if (v === "modify") {
      const corrected = prompt(`Correct code for ${f.display}:`);
      if (!corrected) return;
      body.corrected_code = corrected;
    }
    await ctx.api(`/api/cases/${row.case_id}/feedback`, { method: "POST", body })
      .catch((err) => alert(err.message));
    refresh();
  };
  return h("ul", { class: "flags" }, row.ai_flags.map((f) => h("li", { dataset: { code: f.code } },
    h("strong", {}, f.display),
    f.probability !== null && f.probability !== undefined ? ` ${(f.probability * 100).toFixed(0)}%` : "",
    f.demo ? [" ", pill("DEMO", "stopped")] : "",
    h("span", { class: "muted" }, ` ${f.model} ${f.version}`),
    ctx.can("post_feedback") ? h("span", { class: "actions" },
      ["accept", "reject", "modify"].map((v) => h("button", { onclick: verdict(f, v), "data-verdict": v }, v))) : "")));
}

export async function render(root, ctx) {
  const box = h("div", { class: "card" });
  const agreement = h("div", { class: "card" });
  root.append(h("h2", {}, "Worklist"),
    h("p", { class: "muted" }, "AI findings are preliminary: a second reader you confirm or reject."),
    box, h("h3", {}, "Agreement per model"), agreement);
  async function refresh() {
    const data = await ctx.api("/api/worklist?limit=200");
    const now = Date.now() / 1000;
    const read = (row) => async () => {
      await ctx.api(`/api/worklist/${row.case_id}/read`, { method: "POST", body: { read: true } })
        .catch((err) => alert(err.message));
      refresh();
    };
    clear(box).append(table([
      { title: "Case", num: true, value: (r) => h("a", { href: `#/cases/${r.case_id}` }, String(r.case_id)) },
      { title: "Priority", value: priority },
      { title: "Waiting", num: true, value: (r) => secs(now - r.created_at) },
      { title: "Accession", value: (r) => r.accession || "–" },
      { title: "Patient", value: (r) => r.patient_id || "–" },
      { title: "Modality", value: (r) => r.modality || "–" },
      { title: "Procedure", value: (r) => r.procedure || "–" },
      { title: "Why", value: (r) => r.reason || "–" },
      { title: "AI findings", value: (r) => flags(r, ctx, refresh) },
      { title: "", value: (r) => (ctx.can("mark_read") ? h("button", { onclick: read(r), "data-action": "read" }, "Read") : "") },
    ], data.worklist.map((r) => ({ ...r, id: r.case_id })), { testid: "worklist", empty: "nothing to read" }));
    const agg = await ctx.api("/api/agreement");
    clear(agreement).append(table([
      { title: "Model", value: (a) => a.model },
      { title: "Version", value: (a) => a.version },
      { title: "Confirmed", num: true, value: (a) => String(a.accepted) },
      { title: "Refuted", num: true, value: (a) => String(a.rejected) },
      { title: "Modified", num: true, value: (a) => String(a.modified) },
      { title: "Missed", num: true, value: (a) => String(a.missed) },
      { title: "Agreement", num: true, value: (a) => (a.agreement === null ? "–" : `${(a.agreement * 100).toFixed(1)}%`) },
    ], agg.agreement, { testid: "agreement", empty: "no feedback yet" }));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => null), 5000);
  return () => clearInterval(timer);
}

// The audit log (admin): who viewed or changed what, and when.
import { query } from "../js/api.js";
import { h, table, when } from "../js/dom.js";

export async function render(root, ctx) {
  const params = ctx.route.params;
  const data = await ctx.api(`/api/audit${query({ user: params.get("user"), action: params.get("action"), limit: 500 })}`);
  root.append(h("h2", {}, "Audit log"), h("div", { class: "card" }, table([
    { title: "When", value: (e) => when(e.at) },
    { title: "User", value: (e) => `${e.user} (${e.role})` },
    { title: "Action", value: (e) => e.action },
    { title: "Target", value: (e) => (e.action === "message.view"
      ? h("a", { href: `#/messages/${e.target}` }, e.target) : e.target || "") },
    { title: "Detail", value: (e) => (e.detail ? JSON.stringify(e.detail) : "") },
    { title: "From", value: (e) => e.remote || "" },
  ], data.entries, { testid: "audit-list" })));
}

// Destination queues: depth, oldest waiting, retries, the head and whether it is stalled;
// pause and resume; skip a stuck head (asks why: kept with the delivery and audited).
import { clear, h, pill, secs, table } from "../js/dom.js";

export async function deliveryAction(ctx, id, verb) {
  const reason = window.prompt(`Why ${verb} delivery ${id}? (kept with it and in the audit log)`);
  if (reason === null || !reason.trim()) return null;
  return ctx.api(`/api/deliveries/${id}/${verb}`, { method: "POST", body: { reason } });
}

function headCell(q) {
  if (!q.head) return "–";
  return h("span", { "data-testid": "head" },
    h("a", { href: `#/messages/${q.head.message}` }, `message ${q.head.message}`),
    ` for ${secs(q.head.age_secs)}`, q.stalled ? [" ", pill("stalled", "failed")] : "",
    q.head.last_error ? h("div", { class: "muted" }, q.head.last_error) : "");
}

export async function render(root, ctx) {
  const box = h("div", { class: "card" });
  root.append(h("h2", {}, "Queues"), box);
  async function refresh() {
    const data = await ctx.api("/api/queues");
    const act = (q, verb) => async () => {
      await ctx.api(`/api/queues/${encodeURIComponent(q.name)}/${verb}`, { method: "POST" })
        .catch((err) => alert(err.message));
      refresh();
    };
    const skip = (q) => async () => {
      await deliveryAction(ctx, q.head.delivery, "skip").catch((err) => alert(err.message));
      refresh();
    };
    const buttons = (q) => [
      ctx.can("pause_queue")
        ? h("button", { onclick: act(q, q.paused ? "resume" : "pause"), "data-action": q.paused ? "resume" : "pause" },
          q.paused ? "Resume" : "Pause") : "",
      q.head && ctx.can("skip_delivery")
        ? h("button", { onclick: skip(q), "data-action": "skip", title: "End the head delivery as ERROR (SKIPPED) so the queue moves on" },
          "Skip head") : "",
    ];
    clear(box).append(table([
      { title: "Destination", value: (q) => q.name },
      { title: "State", value: (q) => h("span", {}, pill(q.state), q.paused ? [" ", pill("paused", "stopped")] : "") },
      { title: "Depth", num: true, value: (q) => h("span", { "data-testid": "depth" }, String(q.depth)) },
      { title: "Oldest waiting", num: true, value: (q) => secs(q.oldest_age_secs) },
      { title: "Head", value: headCell },
      { title: "Sent", num: true, value: (q) => String(q.sent ?? "–") },
      { title: "Errors", num: true, value: (q) => String(q.errors ?? "–") },
      { title: "Retries", num: true, value: (q) => String(q.retries ?? "–") },
      { title: "Backoff", num: true, value: (q) => (q.backoff_secs ? secs(q.backoff_secs) : "–") },
      { title: "", value: buttons },
    ], data.queues, { testid: "queue-list", empty: "no destinations" }));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => null), 3000);
  return () => clearInterval(timer);
}

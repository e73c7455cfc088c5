// Destination queues: depth, oldest waiting, retries; pause and resume.
import { clear, h, pill, secs, table } from "../js/dom.js";

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
    clear(box).append(table([
      { title: "Destination", value: (q) => q.name },
      { title: "State", value: (q) => h("span", {}, pill(q.state), q.paused ? [" ", pill("paused", "stopped")] : "") },
      { title: "Depth", num: true, value: (q) => h("span", { "data-testid": "depth" }, String(q.depth)) },
      { title: "Oldest waiting", num: true, value: (q) => secs(q.oldest_age_secs) },
      { title: "Sent", num: true, value: (q) => String(q.sent ?? "–") },
      { title: "Errors", num: true, value: (q) => String(q.errors ?? "–") },
      { title: "Retries", num: true, value: (q) => String(q.retries ?? "–") },
      { title: "Backoff", num: true, value: (q) => (q.backoff_secs ? secs(q.backoff_secs) : "–") },
      { title: "", value: (q) => (ctx.can("pause_queue")
        ? h("button", { onclick: act(q, q.paused ? "resume" : "pause"), "data-action": q.paused ? "resume" : "pause" },
          q.paused ? "Resume" : "Pause") : "") },
    ], data.queues, { testid: "queue-list", empty: "no destinations" }));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => null), 3000);
  return () => clearInterval(timer);
}

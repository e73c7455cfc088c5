// Channel grid: state, counts and rates, refreshed every 2 s; errors link to their messages.
import { query } from "../js/api.js";
import { clear, h, pill, rate, table, when } from "../js/dom.js";

const POLL_MS = 2000;

function errorsLink(ch) {
  const n = ch.totals.errored;
  if (!n) return h("span", { "data-testid": "errored" }, "0");
  const filter = ch.source ? { channel: ch.name, status: "ERROR" } : { status: "ERROR" };
  return h("a", { href: `#/messages${query(filter)}`, class: "error", "data-testid": "errored" },
    String(n));
}

function actions(ch, ctx, refresh) {
  if (!ctx.can("stop_channel")) return "";
  const act = (verb) => async () => {
    try {
      await ctx.api(`/api/channels/${encodeURIComponent(ch.name)}/${verb}`, { method: "POST" });
    } catch (err) {
      alert(`${verb} ${ch.name}: ${err.message}`);
    }
    refresh();
  };
  const running = ch.state === "running";
  return h("div", { class: "actions" },
    running ? h("button", { onclick: act("stop"), "data-action": "stop" }, "Stop")
      : h("button", { onclick: act("start"), "data-action": "start", disabled: !ch.enabled }, "Start"),
    h("button", { onclick: act("redeploy"), "data-action": "redeploy", disabled: !ch.enabled },
      "Redeploy"));
}

function columns(ctx, refresh) {
  const num = (key) => (ch) => h("span", { "data-testid": key }, String(ch.totals[key]));
  return [
    { title: "Channel", value: (ch) => h("div", {}, h("strong", {}, ch.name),
      ch.description ? h("div", { class: "muted" }, ch.description) : "") },
    { title: "State", value: (ch) => h("span", {}, pill(ch.state),
      ch.paused ? [" ", pill("paused", "stopped")] : "") },
    { title: "Kind", value: (ch) => [ch.source, ch.destination].filter(Boolean).join(" → ") },
    { title: "Address", value: (ch) => ch.address || "–" },
    { title: "Received", num: true, value: num("received") },
    { title: "Rate", num: true, value: (ch) => h("span", { "data-testid": "rate" },
      rate(ch.rates.received || ch.rates.sent)) },
    { title: "Filtered", num: true, value: num("filtered") },
    { title: "Queued", num: true, value: num("queued") },
    { title: "Sent", num: true, value: num("sent") },
    { title: "Errored", num: true, value: errorsLink },
    { title: "", value: (ch) => actions(ch, ctx, refresh) },
  ];
}

export async function render(root, ctx) {
  const grid = h("div", { class: "card" });
  const stamp = h("span", { class: "muted", "data-testid": "sampled-at" });
  root.append(h("div", { class: "toolbar" }, h("h2", {}, "Channels"), stamp), grid);
  let timer = null;
  async function refresh() {
    try {
      const data = await ctx.api("/api/channels");
      clear(grid).append(table(columns(ctx, refresh), data.channels, {
        testid: "channel-grid",
        onRow: (ch) => ctx.navigate(`#/messages${query({ channel: ch.source ? ch.name : "" })}`),
      }));
      stamp.textContent = `updated ${when(data.sampled_at)}`;
    } catch (err) {
      stamp.textContent = `cannot refresh: ${err.message}`;
    }
  }
  await refresh();
  timer = setInterval(refresh, POLL_MS);
  return () => clearInterval(timer);
}

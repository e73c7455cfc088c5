// Channel grid: state, counts and rates, refreshed every 2 s; errors link to their messages.
// A channel's page (#/channels/<name>): its settings and the tester (paste a message or pick
// a stored one, see each step's effect; nothing is stored or sent).
import { query } from "../js/api.js";
import { clear, h, pill, rate, table, when } from "../js/dom.js";
import { renderTrace } from "../js/trace.js";

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
    { title: "Channel", value: (ch) => h("div", {}, h("strong", {}, h("a", {
      href: `#/channels/${encodeURIComponent(ch.name)}`, "data-testid": "channel-link" }, ch.name)),
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

function tryPanel(ctx, name) {
  const text = h("textarea", { rows: 8, cols: 100, "data-testid": "try-message",
    placeholder: "paste an HL7 message (segments on separate lines)" });
  const id = h("input", { size: 10, "data-testid": "try-message-id", placeholder: "message id" });
  const note = h("span", { class: "muted", "data-testid": "try-note" });
  const result = h("div", {});
  const run = async () => {
    const body = id.value.trim() ? { message_id: Number(id.value.trim()) }
      : { message: text.value.replace(/\r?\n/g, "\r") };
    note.textContent = "running…";
    try {
      const t = await ctx.api(`/api/channels/${encodeURIComponent(name)}/try`, { method: "POST", body });
      note.textContent = "nothing was stored or sent";
      result.replaceChildren(renderTrace(t));
    } catch (err) {
      note.textContent = `cannot try: ${err.message}`;
      result.replaceChildren();
    }
  };
  return h("div", { class: "card", "data-testid": "try-panel" }, h("h3", {}, "Try a message"),
    text, h("div", { class: "toolbar" }, h("label", {}, "or a stored message", id),
      h("button", { class: "primary", onclick: run, "data-testid": "try-run" }, "Try"), note),
    result);
}

async function channelView(root, ctx, name) {
  const ch = await ctx.api(`/api/channels/${encodeURIComponent(name)}`);
  const kv = [["State", pill(ch.state)], ["Kind", [ch.source, ch.destination].filter(Boolean).join(" → ")],
    ["Address", ch.address], ["Accepts", (ch.accept || []).join(", ")],
    ["Forwards to", (ch.forward_to || []).join(", ")]];
  root.append(h("div", { class: "toolbar" }, h("h2", {}, `Channel ${ch.name}`),
    h("a", { href: `#/messages${query({ channel: ch.name })}` }, "its messages")),
  h("div", { class: "card" }, h("dl", { class: "kv" }, kv.filter(([, v]) => v)
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))));
  if (ctx.can("try_channel")) root.append(tryPanel(ctx, ch.name));
}

export async function render(root, ctx) {
  if (ctx.route.rest[0]) return channelView(root, ctx, ctx.route.rest[0]);
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

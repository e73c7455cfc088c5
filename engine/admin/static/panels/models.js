// Models: configured version, what was loaded on which device, job counts, latencies.
import { h, pill, table, when } from "../js/dom.js";

function ms(v) {
  return v === null || v === undefined ? "–" : `${Math.round(v)} ms`;
}

function jobs(counts) {
  const parts = Object.entries(counts || {}).map(([state, n]) => `${state} ${n}`);
  return parts.length ? parts.join(" · ") : "–";
}

export async function render(root, ctx) {
  const data = await ctx.api("/api/models");
  root.append(h("h2", {}, "Models"),
    h("p", { class: "muted" }, `over the last ${data.window} jobs and attempts; `
      + `${data.no_model_jobs} case(s) matched no model`),
    h("div", { class: "card" }, table([
      { title: "Model", value: (m) => h("strong", {}, m.name) },
      { title: "Version", value: (m) => m.version || "–" },
      { title: "Mode", value: (m) => m.mode || "–" },
      { title: "Loaded", value: (m) => (m.loaded
        ? h("span", {}, pill(m.loaded.status, m.loaded.status === "loaded" ? "running" : "failed"),
          ` ${m.loaded.device} · ${m.loaded.checksum.slice(0, 12)} · ${when(m.loaded.at)}`)
        : "–") },
      { title: "Jobs", value: (m) => jobs(m.jobs) },
      { title: "Attempts", num: true, value: (m) => String(m.latency.attempts) },
      { title: "Total p50 / p95", num: true,
        value: (m) => `${ms(m.latency.total_ms.p50)} / ${ms(m.latency.total_ms.p95)}` },
      { title: "Forward p50", num: true, value: (m) => ms(m.latency.forward_ms.p50) },
      { title: "Devices", value: (m) => m.latency.devices.join(", ") || "–" },
      { title: "Agreement", value: (m) => (m.agreement === null ? h("span", { class: "muted" }, "no reads yet")
        : `${Math.round(m.agreement * 100)}% of ${m.judged}`) },
    ], data.models, { testid: "model-list", empty: "no models configured or seen" })));
}

// The dashboard shell: who am I, the panels my role may see, and a hash router.
//
// A route is "#/<panel>/<rest>?<query>". Each panel is an ES module (registered server-side
// with engine.admin.routing.register_panel) exporting render(root, ctx); it may return a
// function that stops its polling when the view changes.
import { api, setCsrf } from "./api.js";
import { clear, h } from "./dom.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let session = null;
let panels = new Map();
let stopCurrent = null;

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, qs = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { panel: parts[0] || "channels", rest: parts.slice(1), params: new URLSearchParams(qs) };
}

export function navigate(hash) {
  window.location.hash = hash;
}

function can(operationId) {
  return session.operations.includes(operationId);
}

async function show() {
  if (stopCurrent) { stopCurrent(); stopCurrent = null; }
  const route = parseHash();
  const panel = panels.get(route.panel) || panels.values().next().value;
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.panel === panel.id);
  clear(view);
  const root = h("section", { "data-panel": panel.id });
  view.append(root);
  try {
    const mod = await import(`/ui/${panel.module}`);
    const ctx = { api, route, navigate, can, session };
    const stop = await mod.render(root, ctx);
    if (typeof stop === "function") stopCurrent = stop;
  } catch (err) {
    root.append(h("p", { class: "error" }, `cannot show ${panel.title}: ${err.message}`));
  }
}

async function boot() {
  session = await api("/api/session");
  setCsrf(session.csrf);
  panels = new Map(session.panels.map((p) => [p.id, p]));
  for (const p of session.panels) {
    nav.append(h("a", { href: `#/${p.id}`, dataset: { panel: p.id } }, p.title));
  }
  document.getElementById("who").textContent = `${session.user} (${session.role})`;
  if (session.masked) {
    const banner = document.getElementById("banner");
    banner.textContent = "Viewer role: patient identifiers and message content are masked.";
    banner.hidden = false;
  }
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/api/logout", { method: "POST" }).catch(() => null);
    window.location.assign("/login");
  });
  window.addEventListener("hashchange", show);
  await show();
}

boot();

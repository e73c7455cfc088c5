// Tiny DOM helpers. Every value goes in as text (never innerHTML): message content is data.

/** h("tr", {class: "x", onclick: fn, dataset: {id: 1}}, child, "text", ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "class") {
      el.className = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function when(ts) {
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  return d.toLocaleString(undefined, { hour12: false });
}

export function secs(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  if (value < 7200) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function rate(value) {
  return value ? `${value.toFixed(1)}/s` : "0/s";
}

export function pill(text, kind) {
  return h("span", { class: `pill ${kind || text}` }, text);
}

/** A table from column specs: [{title, value: row => text|Node, num?}] */
export function table(columns, rows, { onRow, testid, empty = "nothing here" } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.title)));
  const body = rows.length
    ? rows.map((row) => h("tr", {
      class: onRow ? "clickable" : "",
      onclick: onRow ? (ev) => { if (!ev.target.closest("button,a,input")) onRow(row); } : null,
      dataset: row.id !== undefined ? { id: row.id } : row.name ? { name: row.name } : {},
    }, columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.value(row)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("table", { "data-testid": testid }, h("thead", {}, head), h("tbody", {}, body));
}

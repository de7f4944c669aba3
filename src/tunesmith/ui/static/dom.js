// Small DOM helpers. Text always goes in as textContent (never innerHTML): run data is the user's data.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
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

export function fmt(value, digits = 4) {
  if (value === undefined || value === null || value === "") return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    if (Math.abs(value) >= 1000) return value.toLocaleString("en-US", { maximumFractionDigits: 1 });
    if (Math.abs(value) > 0 && Math.abs(value) < 1e-3) return value.toExponential(2);
    return value.toFixed(digits);
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A metric value: 0 and 1 are scores like any other (1.0000), while counts stay whole numbers.
export function fmtMetric(value) {
  return typeof value === "number" && (value === 0 || value === 1) ? value.toFixed(4) : fmt(value);
}

export function fmtDelta(delta, greaterIsBetter) {
  if (delta === null || delta === undefined) return h("span", { class: "muted", text: "–" });
  if (Math.abs(delta) < 1e-12) return h("span", { class: "muted", text: "±0" });
  const better = greaterIsBetter ? delta > 0 : delta < 0;
  const text = (delta > 0 ? "+" : "") + fmt(delta);
  return h("span", { class: better ? "better" : "worse", text });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

export function fmtTime(epochSeconds) {
  if (!epochSeconds) return "–";
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function badge(status) {
  return h("span", { class: `badge status-${status}`, text: status });
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", { text: title }), ...children);
}

export function table(headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => (x instanceof Node ? x : h("th", { text: x }))))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c)))))),
  );
}

export function kvTable(pairs) {
  return h("table", { class: "kv" }, h("tbody", {}, pairs.map(([k, v]) => h("tr", {}, h("th", { text: k }), h("td", {}, v instanceof Node ? v : fmt(v))))));
}

export function errorBox(message) {
  return h("div", { class: "error", role: "alert" }, h("pre", { text: message }));
}

export function muted(text) {
  return h("p", { class: "muted", text });
}

// Eval metrics recorded in history.jsonl, apart from timings and the loss.
export function evalMetricNames(history) {
  const skip = new Set(["eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_steps"]);
  const names = [];
  for (const rec of history) {
    for (const key of Object.keys(rec)) {
      if (key.startsWith("eval_") && !skip.has(key) && typeof rec[key] === "number" && !names.includes(key)) names.push(key);
    }
  }
  return names.map((k) => k.slice(5));
}

export function seriesOf(history, key) {
  return history.filter((r) => typeof r[key] === "number" && typeof r.step === "number").map((r) => [r.step, r[key]]);
}

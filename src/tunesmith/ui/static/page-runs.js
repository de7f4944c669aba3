// The runs table: sortable columns, a text filter and task/status filters, selection for compare.

import { get, runHash } from "./api.js";
import { badge, clear, fmtDuration, fmtMetric, fmtTime, h, muted } from "./dom.js";

const COLUMNS = [
  { key: "id", label: "run" },
  { key: "task", label: "task" },
  { key: "model_name", label: "model" },
  { key: "method", label: "method" },
  { key: "metric_value", label: "main metric", numeric: true },
  { key: "duration_s", label: "duration", numeric: true },
  { key: "status", label: "status" },
  { key: "started", label: "started", numeric: true },
];

export async function renderRuns(page, params) {
  const state = { runs: [], sort: params.get("sort") || "started", desc: params.get("asc") === null, selected: new Set() };
  const filter = h("input", { type: "search", id: "filter", placeholder: "filter: name, task, model, method, data…", value: params.get("q") || "" });
  const taskSel = h("select", { id: "filter-task" }, h("option", { value: "", text: "all tasks" }));
  const statusSel = h("select", { id: "filter-status" }, h("option", { value: "", text: "any status" }));
  const compareBtn = h("button", { id: "compare-selected", disabled: true, text: "Compare selected" });
  const count = h("span", { class: "muted", id: "runs-count" });
  const body = h("div");
  page.append(
    h("div", { class: "toolbar" }, h("h1", { text: "Runs" }), h("a", { class: "button primary", href: "#/new", text: "New run" })),
    h("div", { class: "filters" }, filter, taskSel, statusSel, compareBtn, count),
    body,
  );
  compareBtn.addEventListener("click", () => {
    location.hash = `#/compare?ids=${[...state.selected].map(encodeURIComponent).join(",")}`;
  });

  const matches = (r) => {
    const q = filter.value.trim().toLowerCase();
    if (taskSel.value && r.task !== taskSel.value) return false;
    if (statusSel.value && r.status !== statusSel.value) return false;
    if (!q) return true;
    return [r.id, r.task, r.model, r.method, r.data, r.status, r.metric].some((v) => String(v || "").toLowerCase().includes(q));
  };

  const sorted = (rows) => {
    const col = COLUMNS.find((c) => c.key === state.sort) || COLUMNS[7];
    const dir = state.desc ? -1 : 1;
    return [...rows].sort((a, b) => {
      const va = a[col.key];
      const vb = b[col.key];
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      return (col.numeric ? va - vb : String(va).localeCompare(String(vb), "en", { numeric: true })) * dir;
    });
  };

  const fillSelect = (sel, values) => {
    const current = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    for (const v of values) sel.append(h("option", { value: v, text: v }));
    sel.value = values.includes(current) ? current : "";
  };

  const draw = () => {
    clear(body);
    if (!state.runs.length) {
      body.append(muted("No runs here yet."), h("a", { class: "button primary", href: "#/new", text: "Start your first run" }));
      count.textContent = "";
      return;
    }
    const rows = sorted(state.runs.filter(matches));
    count.textContent = `${rows.length} of ${state.runs.length} runs`;
    compareBtn.disabled = state.selected.size < 2;
    compareBtn.textContent = state.selected.size ? `Compare selected (${state.selected.size})` : "Compare selected";
    const head = h(
      "tr",
      {},
      h("th", { class: "check" }),
      COLUMNS.map((c) =>
        h("th", {
          class: `sortable${state.sort === c.key ? (state.desc ? " desc" : " asc") : ""}`,
          "data-key": c.key,
          text: c.label,
          title: `sort by ${c.label}`,
          onclick: () => {
            state.desc = state.sort === c.key ? !state.desc : c.numeric;
            state.sort = c.key;
            draw();
          },
        }),
      ),
    );
    const tbody = h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          { "data-run-id": r.id },
          h(
            "td",
            { class: "check" },
            h("input", {
              type: "checkbox",
              "aria-label": `select ${r.id}`,
              checked: state.selected.has(r.id),
              onchange: (e) => {
                if (e.target.checked) state.selected.add(r.id);
                else state.selected.delete(r.id);
                draw();
              },
            }),
          ),
          h("td", {}, h("a", { href: runHash(r.id), text: r.id }), r.data ? h("div", { class: "muted small", text: r.data }) : null),
          h("td", { text: r.task || "–" }),
          h("td", { text: r.model_name || "–", title: r.model || "" }),
          h("td", { text: r.method || "–" }),
          h("td", { class: "num" }, r.metric ? h("span", { class: "muted small", text: `${r.metric} ` }) : null, h("b", { text: fmtMetric(r.metric_value) })),
          h("td", { class: "num", text: fmtDuration(r.duration_s) }),
          h("td", {}, badge(r.status)),
          h("td", { class: "num", text: fmtTime(r.started) }),
        ),
      ),
    );
    body.append(h("table", { id: "runs-table", class: "runs" }, h("thead", {}, head), tbody));
  };

  const load = async () => {
    const data = await get("/api/runs");
    state.runs = data.runs;
    for (const id of [...state.selected]) if (!state.runs.some((r) => r.id === id)) state.selected.delete(id);
    fillSelect(taskSel, [...new Set(state.runs.map((r) => r.task).filter(Boolean))].sort());
    fillSelect(statusSel, [...new Set(state.runs.map((r) => r.status))].sort());
    draw();
    return state.runs.some((r) => r.status === "running");
  };

  for (const el of [filter, taskSel, statusSel]) el.addEventListener("input", draw);
  let running = await load();
  const timer = setInterval(async () => {
    if (!running || document.hidden) return;
    try {
      running = await load();
    } catch {
      /* the next tick tries again */
    }
  }, 3000);
  return () => clearInterval(timer);
}

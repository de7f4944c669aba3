// Two or more runs side by side: summary, metric deltas against the first run, config diff, overlaid curves.

import { get, runHash } from "./api.js";
import { lineChart, PALETTE } from "./charts.js";
import { badge, clear, errorBox, evalMetricNames, fmt, fmtDelta, fmtDuration, fmtMetric, h, muted, section, seriesOf, table } from "./dom.js";

export async function renderCompare(page, params) {
  const ids = (params.get("ids") || "").split(",").map(decodeURIComponent).filter(Boolean);
  const all = (await get("/api/runs")).runs;
  const setIds = (next) => {
    location.hash = `#/compare?ids=${next.map(encodeURIComponent).join(",")}`;
  };
  const picker = h(
    "select",
    { id: "add-run" },
    h("option", { value: "", text: "add a run…" }),
    all.filter((r) => !ids.includes(r.id)).map((r) => h("option", { value: r.id, text: `${r.id} (${r.task || "?"}, ${r.status})` })),
  );
  picker.addEventListener("change", () => picker.value && setIds([...ids, picker.value]));
  const chips = ids.map((id, i) =>
    h(
      "span",
      { class: "chip", style: { borderColor: PALETTE[i % PALETTE.length] } },
      h("a", { href: runHash(id), text: id }),
      h("button", { class: "link", title: `remove ${id}`, text: "×", onclick: () => setIds(ids.filter((x) => x !== id)) }),
    ),
  );
  page.append(h("div", { class: "toolbar" }, h("h1", { text: "Compare runs" })), h("div", { class: "filters" }, chips, picker));
  if (ids.length < 2) {
    page.append(muted("Pick at least two runs: add them here, or tick them in the runs table and press “Compare selected”."));
    return null;
  }
  let data;
  try {
    data = await get("/api/compare", { id: ids });
  } catch (e) {
    page.append(errorBox(e.message));
    return null;
  }
  const runs = data.runs;
  const head = (first) => [first, ...runs.map((r, i) => h("th", { style: { color: PALETTE[i % PALETTE.length] }, text: r.id }))];

  page.append(
    section(
      "Runs",
      table(head("run"), [
        ["task", ...runs.map((r) => r.task || "–")],
        ["model", ...runs.map((r) => r.model_name || "–")],
        ["method", ...runs.map((r) => r.method || "–")],
        ["data", ...runs.map((r) => r.data || "–")],
        ["main metric", ...runs.map((r) => (r.metric ? `${r.metric} ${fmtMetric(r.metric_value)}` : "–"))],
        ["duration", ...runs.map((r) => fmtDuration(r.duration_s))],
        ["status", ...runs.map((r) => badge(r.status))],
      ]),
    ),
  );

  const metricRows = data.metrics.map((m) => [
    m.name,
    ...m.values.map((v, i) => (i === 0 ? h("b", { text: fmtMetric(v) }) : h("span", {}, fmtMetric(v), " ", fmtDelta(m.deltas[i], m.greater_is_better)))),
  ]);
  const trainingRows = data.training.map((m) => [m.name, ...m.values.map((v) => fmt(v))]);
  page.append(
    section(
      "Metrics",
      muted(`differences against ${runs[0].id} (green: better, red: worse)`),
      metricRows.length ? table(head("metric"), metricRows, { id: "metric-deltas" }) : muted("none of these runs has eval metrics yet."),
      trainingRows.length ? [h("h3", { text: "training" }), table(head(""), trainingRows)] : null,
    ),
  );

  const showAll = h("input", { type: "checkbox", id: "show-all-config" });
  const configBox = h("div");
  const drawConfig = () => {
    clear(configBox);
    const rows = data.config.filter((r) => showAll.checked || r.differs);
    if (!rows.length) configBox.append(muted("the configs are identical."));
    else configBox.append(table(head("setting"), rows.map((r) => [r.key, ...r.values.map((v) => h("span", { class: r.differs ? "differs" : "", text: fmt(v) }))]), { id: "config-diff" }));
  };
  showAll.addEventListener("change", drawConfig);
  drawConfig();
  const differing = data.config.filter((r) => r.differs).length;
  page.append(section("Configuration", h("label", { class: "small" }, showAll, ` show all settings (${differing} differ)`), configBox));

  const charts = h("div", { class: "charts", id: "overlaid-curves" });
  const color = (i) => PALETTE[i % PALETTE.length];
  const histories = ids.map((id) => data.histories[id] || []);
  charts.append(
    lineChart({
      title: "train loss",
      series: histories.map((hist, i) => ({ name: ids[i], color: color(i), points: seriesOf(hist.filter((r) => !("train_runtime" in r)), "loss") })),
    }),
  );
  const metric = runs[0].metric && evalMetricNames(histories[0]).includes(runs[0].metric) ? runs[0].metric : evalMetricNames(histories.flat())[0];
  if (metric) charts.append(lineChart({ title: `eval ${metric}`, series: histories.map((hist, i) => ({ name: ids[i], color: color(i), points: seriesOf(hist, `eval_${metric}`) })) }));
  charts.append(lineChart({ title: "eval loss", series: histories.map((hist, i) => ({ name: ids[i], color: color(i), points: seriesOf(hist, "eval_loss"), dashed: true })) }));
  page.append(section("Training curves", charts));
  return null;
}

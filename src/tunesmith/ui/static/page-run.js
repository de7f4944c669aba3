// One run: live progress, metrics, curves, confusion matrix, per-language metrics, doctor findings,
// overfitting verdict, data, config, the HTML report, and a box to try the model.

import { fileUrl, get, post, postStream } from "./api.js";
import { lineChart } from "./charts.js";
import { append, badge, clear, errorBox, evalMetricNames, fmt, fmtDuration, fmtMetric, h, kvTable, muted, section, seriesOf, table } from "./dom.js";

const HIDDEN_EVAL = new Set(["confusion_matrix", "labels", "per_class", "per_language", "majority_baseline", "tfidf_svm_baseline"]);
const BASELINES = { majority_baseline: "majority class", tfidf_svm_baseline: "TF-IDF + SVM" };

export async function renderRun(page, id) {
  let detail = await get("/api/run", { id });
  let source = null;
  let chartTimer = null;
  const live = { history: detail.history, charts: null, progress: null, log: null };

  const close = () => {
    if (source) source.close();
    source = null;
    clearTimeout(chartTimer);
  };

  const redraw = () => {
    close();
    clear(page);
    draw(page, detail, live, actions);
    if (detail.summary.status === "running") follow();
  };

  const reload = async () => {
    detail = await get("/api/run", { id });
    live.history = detail.history;
    redraw();
  };

  const follow = () => {
    source = new EventSource(`/api/run/events?id=${encodeURIComponent(id)}&offset=${detail.history_offset}`);
    source.addEventListener("history", (e) => {
      live.history.push(...JSON.parse(e.data).records);
      clearTimeout(chartTimer);
      chartTimer = setTimeout(() => live.charts && drawCharts(live.charts, live.history, detail), 300);
    });
    source.addEventListener("progress", (e) => live.progress && drawProgress(live.progress, JSON.parse(e.data)));
    source.addEventListener("log", (e) => {
      if (live.log) live.log.textContent = JSON.parse(e.data).text;
    });
    source.addEventListener("done", () => {
      close();
      reload();
    });
    source.onerror = () => {
      // the server went away or restarted: try once more in a few seconds from a fresh page state
      close();
      setTimeout(() => reload().catch(() => {}), 3000);
    };
  };

  const actions = {
    cancel: async (button) => {
      button.disabled = true;
      button.textContent = "Cancelling… (saving a checkpoint)";
      try {
        await post("/api/run/cancel", { id });
      } catch (e) {
        page.prepend(errorBox(e.message));
        button.disabled = false;
      }
    },
    resume: async (button) => {
      button.disabled = true;
      try {
        await post("/api/run/resume", { id });
        await reload();
      } catch (e) {
        page.prepend(errorBox(e.message));
        button.disabled = false;
      }
    },
  };

  redraw();
  return close;
}

function draw(page, detail, live, actions) {
  const s = detail.summary;
  const header = h(
    "div",
    { class: "toolbar" },
    h("h1", {}, s.id, " ", badge(s.status)),
    h(
      "div",
      { class: "actions" },
      detail.cancellable ? h("button", { id: "cancel", class: "danger", text: "Cancel", title: "stop after this step, keeping a checkpoint to resume from", onclick: (e) => actions.cancel(e.target) }) : null,
      s.resumable ? h("button", { id: "resume", class: "primary", text: "Resume from the last checkpoint", onclick: (e) => actions.resume(e.target) }) : null,
      h("a", { class: "button", href: `#/compare?ids=${encodeURIComponent(s.id)}`, text: "Compare with…" }),
      detail.has_report ? h("a", { class: "button", href: fileUrl(s.id, "report.html"), target: "_blank", rel: "noopener", text: "Open report" }) : null,
    ),
  );
  const facts = h(
    "p",
    { class: "facts" },
    [
      ["task", s.task],
      ["model", s.model_name],
      ["method", s.method],
      ["data", s.data],
      ["duration", fmtDuration(s.duration_s)],
    ].map(([k, v]) => h("span", {}, h("span", { class: "muted", text: `${k} ` }), v || "–")),
  );
  page.append(header, facts);

  const p = detail.progress;
  if (p && (s.status === "running" || p.state === "cancelled" || p.state === "failed")) {
    live.progress = h("section", { class: "card", id: "progress" });
    drawProgress(live.progress, p, s.status);
    page.append(live.progress);
  } else live.progress = null;
  if (s.status === "cancelled" || s.status === "interrupted") {
    page.append(
      h(
        "p",
        { class: "note", id: "resume-note" },
        `This run stopped before the end${p && p.cancelled_at_step ? ` (checkpoint at step ${p.cancelled_at_step})` : ""}. `,
        "Resume continues from the last complete checkpoint with the same settings.",
      ),
    );
  }

  const grid = h("div", { class: "grid" });
  page.append(grid);
  const metrics = detail.metrics || {};
  const evaluation = metrics.eval || {};
  grid.append(section("Metrics", metricsBody(s, evaluation, metrics.training)));
  live.charts = h("div", { class: "charts", id: "curves" });
  drawCharts(live.charts, live.history, detail);
  grid.append(section("Training curves", live.charts));
  if (evaluation.confusion_matrix && evaluation.labels) grid.append(section("Confusion matrix", confusion(evaluation.confusion_matrix, evaluation.labels)));
  if (evaluation.per_class) grid.append(section("Per class", records(evaluation.per_class, "label")));
  if (evaluation.per_language) grid.append(h("section", { class: "card", id: "per-language" }, h("h2", { text: "Per language" }), records(evaluation.per_language, "language")));
  if (detail.has_model && detail.generative) grid.append(chatBox(s.id));
  else if (detail.has_model) grid.append(tryBox(s.id));
  grid.append(h("section", { class: "card wide", id: "doctor" }, h("h2", { text: "Doctor findings" }), doctorBody(detail.doctor)));
  if (detail.overfitting) grid.append(section("Overfitting", overfitting(detail.overfitting)));
  if (detail.data) grid.append(section("Data", dataBody(detail.data)));
  grid.append(section("Configuration", configBody(detail.config)));
  if (detail.has_report) grid.append(reportBox(s.id));
  live.log = h("pre", { class: "log", id: "log", text: detail.log || "" });
  if (detail.log) {
    const open = ["running", "failed", "cancelled"].includes(s.status);
    grid.append(h("section", { class: "card wide" }, h("details", { open }, h("summary", { text: "Training log" }), live.log)));
  }
}

export function drawProgress(el, p, status) {
  clear(el);
  const step = p.step ?? 0;
  const max = p.max_steps || 0;
  const state = p.state || status;
  const items = [
    ["state", state],
    ["step", max ? `${step} / ${max}` : step],
    ["epoch", p.epoch !== null && p.epoch !== undefined ? fmt(p.epoch, 2) : "–"],
    ["loss", fmt(p.loss)],
    [p.metric ? `eval ${p.metric}` : "eval", fmt(p.metric_value)],
    ["elapsed", fmtDuration(p.elapsed_s)],
    ["ETA", state === "training" ? fmtDuration(p.eta_s) : "–"],
  ];
  append(el, [
    h("h2", { text: "Progress" }),
    h("div", { class: "progress-facts" }, items.map(([k, v]) => h("span", { "data-field": k }, h("span", { class: "muted", text: `${k} ` }), h("b", { text: String(v) })))),
    h("progress", { id: "progress-bar", max: max || 1, value: max ? step : 0 }),
    p.error ? errorBox(p.error) : null,
  ]);
}

function metricsBody(s, evaluation, training) {
  const scalars = Object.entries(evaluation).filter(([k, v]) => typeof v === "number" && !HIDDEN_EVAL.has(k));
  if (!scalars.length) return muted(s.status === "running" ? "the final metrics appear when training ends." : "no metrics.json in this run.");
  const out = [];
  if (s.metric && typeof s.metric_value === "number") out.push(h("p", { class: "headline" }, h("span", { class: "muted", text: `${s.metric} ` }), h("b", { id: "main-metric", text: fmt(s.metric_value) })));
  const baselines = Object.entries(BASELINES).filter(([k]) => evaluation[k] && typeof evaluation[k] === "object");
  out.push(
    table(
      ["metric", "model", ...baselines.map(([, name]) => name)],
      scalars.map(([k, v]) => [k, h("b", { text: k === "n" ? fmt(v) : fmtMetric(v) }), ...baselines.map(([key]) => fmtMetric(evaluation[key][k]))]),
      { id: "metrics-table" },
    ),
  );
  for (const [k, v] of Object.entries(evaluation)) {
    if (HIDDEN_EVAL.has(k) || !v || typeof v !== "object" || Array.isArray(v)) continue;
    const recs = Object.values(v);
    if (recs.length && recs.every((r) => r && typeof r === "object")) out.push(h("h3", { text: k }), records(v, k.replace(/^per_/, "")));
  }
  if (training) {
    const keep = ["steps", "epochs", "wall_seconds", "train_samples_per_second", "best_metric", "stopped_early", "precision"];
    out.push(h("h3", { text: "training" }), kvTable(keep.filter((k) => k in training).map((k) => [k, training[k]])));
  }
  return out;
}

export function curveSeries(history, metric) {
  const loss = [
    { name: "train loss", points: seriesOf(history.filter((r) => !("train_runtime" in r)), "loss") },
    { name: "eval loss", points: seriesOf(history, "eval_loss"), dashed: true },
  ];
  const names = evalMetricNames(history);
  const ordered = metric && names.includes(metric) ? [metric, ...names.filter((n) => n !== metric)] : names;
  const evals = ordered.slice(0, 4).map((n) => ({ name: `eval ${n}`, points: seriesOf(history, `eval_${n}`) }));
  return { loss, evals };
}

function drawCharts(el, history, detail) {
  clear(el);
  if (!history.length) {
    el.append(muted(detail.summary.status === "running" ? "waiting for the first logged step…" : "no history.jsonl in this run."));
    return;
  }
  const { loss, evals } = curveSeries(history, detail.summary.metric);
  el.append(lineChart({ title: "loss", series: loss, yLabel: "loss" }));
  if (evals.some((x) => x.points.length)) el.append(lineChart({ title: "eval metrics", series: evals }));
}

function confusion(matrix, labels) {
  const rowMax = matrix.map((row) => Math.max(1, ...row));
  return [
    muted("rows: gold label; columns: predicted"),
    h(
      "table",
      { class: "confusion", id: "confusion" },
      h("thead", {}, h("tr", {}, h("th", { text: "gold \\ predicted" }), labels.map((l) => h("th", { text: l })))),
      h(
        "tbody",
        {},
        matrix.map((row, i) =>
          h(
            "tr",
            {},
            h("th", { text: labels[i] }),
            row.map((v, j) => {
              const alpha = v / rowMax[i];
              return h("td", { class: i === j ? "diag num" : "num", style: { background: `rgba(${i === j ? "22,163,74" : "220,38,38"},${(0.08 + 0.6 * alpha).toFixed(2)})` }, text: fmt(v) });
            }),
          ),
        ),
      ),
    ),
  ];
}

function records(obj, keyName) {
  const rows = Object.entries(obj).filter(([, r]) => r && typeof r === "object");
  const cols = [...new Set(rows.flatMap(([, r]) => Object.keys(r)))];
  return table([keyName, ...cols], rows.map(([name, r]) => [name, ...cols.map((c) => (c === "n" || c === "support" ? fmt(r[c]) : fmtMetric(r[c])))]));
}

export function doctorBody(doctor, note) {
  if (!doctor) return muted(note || "no doctor.json in this run (the doctor runs for single-label classify runs).");
  const findings = doctor.findings || [];
  const counts = (doctor.summary && doctor.summary.findings) || {};
  const out = [h("p", {}, ["error", "warning", "info"].map((sev) => h("span", { class: `sev sev-${sev}`, text: `${counts[sev] ?? findings.filter((f) => f.severity === sev).length} ${sev}` })))];
  if (!findings.length) out.push(h("p", { text: "The doctor found no problems in the data." }));
  else
    out.push(
      table(
        ["severity", "check", "finding", "remedy"],
        findings.map((f) => [h("span", { class: `sev sev-${f.severity}`, text: f.severity }), f.check, f.message, f.remedy ? h("code", { text: f.remedy }) : "–"]),
        { class: "findings" },
      ),
    );
  return out;
}

function overfitting(o) {
  const out = [h("p", {}, "verdict: ", h("b", { text: o.verdict || "?" }), o.reason ? h("span", { class: "muted", text: ` — ${o.reason}` }) : null)];
  const remedies = o.remedies || [];
  if (remedies.length) out.push(h("ul", {}, remedies.map((r) => h("li", { text: typeof r === "string" ? r : Object.values(r).join(" — ") }))));
  return out;
}

function dataBody(data) {
  const pairs = Object.entries(data).filter(([, v]) => v === null || typeof v !== "object");
  const out = [kvTable(pairs)];
  const countKeys = Object.keys(data).filter((k) => k.startsWith("class_counts") && data[k] && typeof data[k] === "object");
  if (countKeys.length) {
    const labels = [...new Set(countKeys.flatMap((k) => Object.keys(data[k])))];
    out.push(table(["label", ...countKeys.map((k) => k.replace("class_counts_", ""))], labels.map((l) => [l, ...countKeys.map((k) => fmt(data[k][l] ?? 0))])));
  }
  for (const [k, v] of Object.entries(data)) if (v && typeof v === "object" && !k.startsWith("class_counts")) out.push(h("p", { class: "small" }, h("span", { class: "muted", text: `${k}: ` }), JSON.stringify(v)));
  return out;
}

function configBody(config) {
  if (!config || !Object.keys(config).length) return muted("no config.yaml yet.");
  const rows = [];
  for (const [k, v] of Object.entries(config)) {
    if (v && typeof v === "object" && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) rows.push([`${k}.${k2}`, v2]);
    else rows.push([k, v]);
  }
  return h("details", {}, h("summary", { text: `${rows.length} settings` }), kvTable(rows));
}

function reportBox(runId) {
  const url = fileUrl(runId, "report.html");
  const frame = h("iframe", { title: "run report", class: "report", sandbox: "" });
  const details = h("details", { id: "report" }, h("summary", { text: "Show the HTML report here" }), frame);
  details.addEventListener("toggle", () => {
    if (details.open && !frame.src) frame.src = url;
  });
  return h("section", { class: "card wide" }, h("h2", { text: "Report" }), h("p", {}, h("a", { href: url, target: "_blank", rel: "noopener", text: "open report.html in a new tab" })), details);
}

function tryBox(runId) {
  const input = h("textarea", { id: "try-input", rows: 4, placeholder: "one text per line" });
  const button = h("button", { id: "try-button", class: "primary", text: "Predict" });
  const result = h("div", { id: "try-result" });
  button.addEventListener("click", async () => {
    clear(result);
    const texts = input.value.split("\n").filter((t) => t.trim());
    button.disabled = true;
    result.append(muted("working…"));
    try {
      const out = await post("/api/run/predict", { id: runId }, { texts });
      clear(result);
      result.append(predictionTable(texts, out));
    } catch (e) {
      clear(result);
      result.append(errorBox(e.message));
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { class: "card", id: "try" }, h("h2", { text: "Try it" }), input, h("div", { class: "actions" }, button), result);
}

// A conversation with a generative run; the reply streams in as the model writes it.
function chatBox(runId) {
  const messages = [];
  const log = h("div", { class: "chat-log", id: "chat-log" });
  const input = h("textarea", { id: "chat-input", rows: 3, placeholder: "your message (Enter sends, Shift+Enter for a new line)" });
  const temperature = h("input", { id: "chat-temperature", type: "number", min: "0", max: "2", step: "0.1", value: "0.7" });
  const maxNew = h("input", { id: "chat-max-new-tokens", type: "number", min: "1", max: "1024", step: "1", value: "128" });
  const send = h("button", { id: "chat-send", class: "primary", text: "Send" });
  const reset = h("button", { id: "chat-reset", text: "New conversation" });
  const bubble = (role, text) => {
    const el = h("div", { class: `msg ${role}` }, h("span", { class: "who", text: role === "user" ? "you" : "model" }), h("div", { class: "text", text }));
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return el.querySelector(".text");
  };
  const go = async () => {
    const text = input.value.trim();
    if (!text || send.disabled) return;
    messages.push({ role: "user", content: text });
    bubble("user", text);
    input.value = "";
    const out = bubble("assistant", "");
    out.classList.add("streaming");
    send.disabled = true;
    try {
      const reply = await postStream("/api/run/chat", { id: runId }, { messages, temperature: temperature.value, max_new_tokens: maxNew.value }, (piece) => {
        out.textContent += piece;
        log.scrollTop = log.scrollHeight;
      });
      messages.push({ role: "assistant", content: reply.trim() });
    } catch (e) {
      messages.pop();
      out.parentElement.replaceWith(errorBox(e.message));
    } finally {
      out.classList.remove("streaming");
      send.disabled = false;
    }
  };
  send.addEventListener("click", go);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      go();
    }
  });
  reset.addEventListener("click", () => {
    messages.length = 0;
    clear(log);
  });
  return h(
    "section",
    { class: "card", id: "chat" },
    h("h2", { text: "Chat with the model" }),
    log,
    input,
    h("div", { class: "actions" }, send, reset, h("label", { class: "small" }, "temperature ", temperature), h("label", { class: "small" }, "max new tokens ", maxNew)),
  );
}

function predictionTable(texts, out) {
  const preds = out.predictions;
  const first = preds[0] || {};
  if ("generated" in first) return table(["prompt", "reply"], preds.map((p, i) => [texts[i], h("pre", { class: "reply", text: p.generated })]));
  const top = (probs) =>
    Object.entries(probs || {})
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([k, v]) => `${k} ${fmt(v, 3)}`)
      .join(", ");
  if ("entities" in first)
    return table(["text", "entities"], preds.map((p, i) => [texts[i], p.entities.length ? p.entities.map((e) => h("span", { class: "entity", text: `${e.text} [${e.type} ${fmt(e.score, 2)}]` })) : "–"]));
  if ("labels" in first) return table(["text", "labels", "probabilities"], preds.map((p, i) => [texts[i], p.labels.join(", ") || "–", top(p.probabilities)]));
  if ("label" in first) return table(["text", "label", "score", "probabilities"], preds.map((p, i) => [texts[i], h("b", { text: p.label }), fmt(p.score), top(p.probabilities)]));
  if ("values" in first) {
    const names = Object.keys(first.values);
    return table(["text", ...names], preds.map((p, i) => [texts[i], ...names.map((n) => fmt(p.values[n]))]));
  }
  if ("mask_predictions" in first) return table(["text", "top tokens per mask"], preds.map((p, i) => [texts[i], p.mask_predictions.map((m) => m.map((x) => `${x.token} ${fmt(x.score, 2)}`).join(", ")).join(" | ")]));
  return table(["text", "prediction"], preds.map((p, i) => [texts[i], h("code", { text: JSON.stringify(p) })]));
}

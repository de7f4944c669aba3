// The new-run form: data (packaged dataset or an upload), task, model, method, main settings; "Check data"
// reads the data as training will and runs the doctor; "Start training" is enabled once the check passed.

import { info, post, runHash } from "./api.js";
import { clear, errorBox, fmt, h, kvTable, muted, section, table } from "./dom.js";
import { doctorBody } from "./page-run.js";

const SETTINGS = [
  ["epochs", "epochs", "number", "0.1"],
  ["max_steps", "max steps", "number", "1"],
  ["lr", "learning rate", "text", null],
  ["batch_size", "batch size", "number", "1"],
  ["max_length", "max length (tokens)", "number", "1"],
  ["seed", "seed", "number", "1"],
];

function field(label, input, help) {
  return h("label", { class: "field" }, h("span", { class: "label", text: label }), input, help ? h("span", { class: "help", text: help }) : null);
}

function sizeText(bytes) {
  return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${(bytes / 1024).toFixed(1)} KB`;
}

export async function renderNew(page) {
  const meta = await info();
  const d = meta.defaults;
  const uploaded = { train: null, eval: null };
  let checkedKey = null;

  const form = h("form", { id: "new-run", autocomplete: "off", novalidate: true });
  form.addEventListener("submit", (e) => e.preventDefault());

  // ---- data
  const sourcePackaged = h("input", { type: "radio", name: "source", value: "packaged", checked: true });
  const sourceUpload = h("input", { type: "radio", name: "source", value: "upload" });
  const installed = meta.datasets.filter((x) => x.installed);
  const dataset = h(
    "select",
    { name: "dataset" },
    meta.datasets.map((x) =>
      h("option", { value: x.name, disabled: !x.installed, text: `${x.name} — ${x.task}${x.rows ? `, ${x.rows.toLocaleString("en-US")} rows` : ""}${x.installed ? "" : ` (not installed: ${x.install})`}` }),
    ),
  );
  if (installed.length) dataset.value = installed.find((x) => x.name === "sms_spam")?.name || installed[0].name;
  const accept = meta.extensions.join(",");
  const trainFile = h("input", { type: "file", name: "train_file", accept });
  const evalFile = h("input", { type: "file", name: "eval_file", accept });
  const trainInfo = h("div", { class: "upload-info", id: "train-upload" });
  const evalInfo = h("div", { class: "upload-info", id: "eval-upload" });
  const columns = h("datalist", { id: "columns-list" });
  const textCol = h("input", { name: "text_col", list: "columns-list", placeholder: "detected" });
  const labelCol = h("input", { name: "label_col", list: "columns-list", placeholder: "detected" });
  const packagedBox = h("div", { class: "source-packaged" }, field("packaged dataset", dataset));
  const uploadBox = h(
    "div",
    { class: "source-upload", hidden: true },
    field("training file", trainFile, `${meta.extensions.join(" ")}; at most ${sizeText(meta.max_upload_bytes)}`),
    trainInfo,
    field("eval file (optional)", evalFile, "without one, a seeded stratified share of the training file is held out"),
    evalInfo,
  );

  // ---- task, model, method
  const task = h("select", { name: "task" }, meta.tasks.map((t) => h("option", { value: t, text: t })));
  task.value = d.task;
  const model = h("input", { name: "model", list: "models-list", value: d.model });
  const models = h("datalist", { id: "models-list" }, meta.models.map((m) => h("option", { value: m.name, text: `${m.name} (${m.parameters}${m.installed ? "" : ", not installed"})` })));
  const method = h("select", { name: "method" }, meta.methods.map((m) => h("option", { value: m, text: m })));
  method.value = d.method;
  const settings = SETTINGS.map(([key, label, type, step]) =>
    field(label, h("input", { name: key, type, step, min: type === "number" ? "0" : null, placeholder: d[key] === null || d[key] === undefined ? "none" : String(d[key]) }), meta.help[key]),
  );
  const name = h("input", { name: "name", placeholder: "default: <task>-<data>-<date>-<time>", pattern: "[A-Za-z0-9][A-Za-z0-9_.=+-]*" });
  const extra = h("textarea", { name: "extra", rows: 3, placeholder: "more settings as `key: value` lines, e.g.\nlabel_smoothing: 0.1\nclass_weights: auto" });

  const checkBtn = h("button", { type: "button", id: "check-data", text: "Check data" });
  const startBtn = h("button", { type: "button", id: "start-run", class: "primary", disabled: true, text: "Start training" });
  const startHint = h("span", { class: "muted small", text: "check the data first" });
  const report = h("div", { id: "check-result" });

  append(form, [
    section(
      "1. Data",
      h("div", { class: "radios" }, h("label", {}, sourcePackaged, " a packaged dataset"), h("label", {}, sourceUpload, " upload a file")),
      packagedBox,
      uploadBox,
      h("div", { class: "row" }, field("text column", textCol), field("label column", labelCol)),
      columns,
    ),
    section(
      "2. Task and model",
      h("div", { class: "row" }, field("task", task), field("model", model, "a registry name or a local Hugging Face model directory"), field("method", method, meta.help.method)),
      models,
    ),
    section("3. Settings", h("div", { class: "row wrap" }, settings), h("div", { class: "row" }, field("run name", name, `the run directory inside ${meta.runs_dir}`)), field("more settings (YAML)", extra)),
    h("div", { class: "actions sticky" }, checkBtn, startBtn, startHint),
    report,
  ]);
  page.append(h("div", { class: "toolbar" }, h("h1", { text: "New run" })), form);

  const values = () => {
    const v = Object.fromEntries(["task", "text_col", "label_col", "model", "method", "name", "extra", ...SETTINGS.map((s) => s[0])].map((k) => [k, form.elements[k].value]));
    if (sourcePackaged.checked) v.train = dataset.value;
    else {
      v.train = uploaded.train ? uploaded.train.path : "";
      v.eval = uploaded.eval ? uploaded.eval.path : "";
    }
    return v;
  };
  const invalidate = () => {
    if (checkedKey !== null && JSON.stringify(values()) !== checkedKey) {
      startBtn.disabled = true;
      startHint.textContent = "the form changed: check the data again";
    }
  };
  form.addEventListener("input", invalidate);
  form.addEventListener("change", invalidate);

  const showSource = () => {
    packagedBox.hidden = !sourcePackaged.checked;
    uploadBox.hidden = sourcePackaged.checked;
  };
  sourcePackaged.addEventListener("change", showSource);
  sourceUpload.addEventListener("change", showSource);
  dataset.addEventListener("change", () => {
    const ds = meta.datasets.find((x) => x.name === dataset.value);
    if (ds && meta.tasks.includes(ds.task)) task.value = ds.task;
  });

  const upload = async (role, input, box) => {
    clear(box);
    uploaded[role] = null;
    const file = input.files[0];
    if (!file) return;
    if (file.size > meta.max_upload_bytes) {
      box.append(errorBox(`${file.name} is ${sizeText(file.size)}; the limit is ${sizeText(meta.max_upload_bytes)} (start the UI with --max-upload-mb to change it)`));
      input.value = "";
      return;
    }
    box.append(muted(`uploading ${file.name}…`));
    try {
      const res = await post("/api/uploads", { name: file.name }, file, "application/octet-stream");
      uploaded[role] = res;
      clear(box);
      box.append(h("p", { class: "ok", text: `${res.name}: ${res.rows === null ? "?" : res.rows.toLocaleString("en-US")} rows${res.columns ? `, columns ${res.columns.join(", ")}` : ""} (${sizeText(res.size)})` }));
      if (res.preview.length) {
        const cols = Object.keys(res.preview[0]);
        box.append(table(cols, res.preview.map((row) => cols.map((c) => fmt(row[c])))));
      }
      if (res.columns && role === "train") {
        clear(columns);
        for (const c of res.columns) columns.append(h("option", { value: c }));
      }
    } catch (e) {
      clear(box);
      box.append(errorBox(e.message));
      input.value = "";
    }
    invalidate();
  };
  trainFile.addEventListener("change", () => upload("train", trainFile, trainInfo));
  evalFile.addEventListener("change", () => upload("eval", evalFile, evalInfo));

  checkBtn.addEventListener("click", async () => {
    const v = values();
    clear(report);
    startBtn.disabled = true;
    checkBtn.disabled = true;
    report.append(muted("reading the data and running the doctor…"));
    try {
      const res = await post("/api/check", {}, v);
      clear(report);
      report.append(checkResult(res));
      checkedKey = JSON.stringify(v);
      startBtn.disabled = res.exists;
      startHint.textContent = res.exists ? `a run named ${res.name} exists: choose another run name` : `ready: trains into ${meta.runs_dir}/${res.name}`;
    } catch (e) {
      clear(report);
      report.append(errorBox(e.message));
      startHint.textContent = "fix the problems above, then check again";
    } finally {
      checkBtn.disabled = false;
    }
  });

  startBtn.addEventListener("click", async () => {
    startBtn.disabled = true;
    try {
      const res = await post("/api/runs", {}, values());
      location.hash = runHash(res.id);
    } catch (e) {
      report.prepend(errorBox(e.message));
      startBtn.disabled = false;
    }
  });
  return null;
}

function append(el, children) {
  for (const c of children) el.append(c);
}

function checkResult(res) {
  const data = res.data || {};
  const pairs = ["source", "rows_read", "duplicates_removed", "conflicting_duplicates", "split", "train_size", "eval_size", "text_col", "label_col"]
    .filter((k) => k in data)
    .map((k) => [k, data[k]]);
  const counts = ["class_counts_train", "class_counts_eval"].filter((k) => data[k]);
  const labels = [...new Set(counts.flatMap((k) => Object.keys(data[k])))];
  return h(
    "div",
    { class: "grid" },
    section(
      "Data",
      kvTable(pairs),
      counts.length ? table(["label", ...counts.map((k) => k.replace("class_counts_", ""))], labels.map((l) => [l, ...counts.map((k) => fmt(data[k][l] ?? 0))])) : null,
    ),
    h("section", { class: "card wide", id: "doctor-findings" }, h("h2", { text: "Doctor findings" }), doctorBody(res.doctor, res.doctor_note)),
  );
}

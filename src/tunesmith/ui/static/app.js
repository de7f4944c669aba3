// Hash router: #/ runs table, #/run/<id>, #/compare?ids=a,b, #/new. Each page returns a cleanup function.

import { info } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { renderCompare } from "./page-compare.js";
import { renderNew } from "./page-new.js";
import { renderRun } from "./page-run.js";
import { renderRuns } from "./page-runs.js";

const app = document.getElementById("app");
let cleanup = null;

function parse() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  if (path.startsWith("/run/")) return { page: "run", id: decodeURIComponent(path.slice(5)), params };
  if (path === "/compare") return { page: "compare", params };
  if (path === "/new") return { page: "new", params };
  return { page: "runs", params };
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  const r = parse();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === r.page);
  clear(app);
  const page = h("div", { class: "page", "data-page": r.page });
  app.append(page);
  try {
    if (r.page === "run") cleanup = await renderRun(page, r.id);
    else if (r.page === "compare") cleanup = await renderCompare(page, r.params);
    else if (r.page === "new") cleanup = await renderNew(page, r.params);
    else cleanup = await renderRuns(page, r.params);
  } catch (e) {
    page.append(errorBox(e.message || String(e)));
  }
}

window.addEventListener("hashchange", route);
info().then((i) => (document.getElementById("version").textContent = `v${i.version} · ${i.runs_dir}`)).catch(() => {});
route();

// JSON API calls. Every request that changes something carries X-Tunesmith: 1 (the server refuses it otherwise).

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function handle(response) {
  let data;
  try {
    data = await response.json();
  } catch {
    data = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new ApiError(data.error || data.detail || `${response.status} ${response.statusText}`, response.status);
  return data;
}

export async function get(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, item);
  }
  return handle(await fetch(url));
}

export async function post(path, params = {}, body = undefined, contentType = "application/json") {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) url.searchParams.append(k, v);
  const headers = { "X-Tunesmith": "1" };
  let payload = body;
  if (body !== undefined && contentType === "application/json") payload = JSON.stringify(body);
  if (body !== undefined) headers["Content-Type"] = contentType;
  return handle(await fetch(url, { method: "POST", headers, body: payload }));
}

export function fileUrl(runId, path) {
  const url = new URL("/api/run/file", location.origin);
  url.searchParams.set("id", runId);
  url.searchParams.set("path", path);
  return url.pathname + url.search;
}

export function runHash(runId) {
  return `#/run/${runId}`;
}

let infoPromise = null;
export function info() {
  infoPromise = infoPromise || get("/api/info");
  return infoPromise;
}

// POST JSON and read a streamed text answer, calling onText with each piece; returns the whole text.
export async function postStream(path, params, body, onText) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) url.searchParams.append(k, v);
  const response = await fetch(url, { method: "POST", headers: { "X-Tunesmith": "1", "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) await handle(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const piece = decoder.decode(value, { stream: true });
    text += piece;
    onText(piece);
  }
  return text;
}

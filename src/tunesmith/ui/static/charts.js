// Line charts drawn as inline SVG: no library, nothing fetched.

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// Round tick positions covering [lo, hi].
export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw) || 10 * mag;
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  if (ticks[0] > lo) ticks.unshift(ticks[0] - step);
  if (ticks[ticks.length - 1] < hi) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

function tickLabel(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (a < 1e-3) return v.toExponential(0);
  return String(Number(v.toPrecision(4)));
}

/**
 * A line chart. series: [{name, points: [[x, y], ...], color?, dashed?}]. Returns a <figure>.
 */
export function lineChart({ title, series, xLabel = "step", yLabel = "", width = 560, height = 260 }) {
  const fig = document.createElement("figure");
  fig.className = "chart";
  const drawn = series.filter((x) => x.points && x.points.length);
  if (title) {
    const cap = document.createElement("figcaption");
    cap.textContent = title;
    fig.append(cap);
  }
  if (!drawn.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "nothing logged yet";
    fig.append(p);
    return fig;
  }
  const m = { top: 12, right: 16, bottom: 40, left: 58 };
  const xs = drawn.flatMap((x) => x.points.map((p) => p[0]));
  const ys = drawn.flatMap((x) => x.points.map((p) => p[1])).filter(Number.isFinite);
  const xt = niceTicks(Math.min(...xs), Math.max(...xs), 6);
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 5);
  const [x0, x1, y0, y1] = [xt[0], xt[xt.length - 1], yt[0], yt[yt.length - 1]];
  const px = (x) => m.left + ((x - x0) / (x1 - x0 || 1)) * (width - m.left - m.right);
  const py = (y) => height - m.bottom - ((y - y0) / (y1 - y0 || 1)) * (height - m.top - m.bottom);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title || "chart" });
  const grid = s("g", { class: "grid" });
  for (const t of yt) {
    grid.append(s("line", { x1: m.left, x2: width - m.right, y1: py(t), y2: py(t) }));
    grid.append(s("text", { x: m.left - 6, y: py(t) + 4, "text-anchor": "end" }, tickLabel(t)));
  }
  for (const t of xt) {
    grid.append(s("line", { x1: px(t), x2: px(t), y1: m.top, y2: height - m.bottom, class: "v" }));
    grid.append(s("text", { x: px(t), y: height - m.bottom + 16, "text-anchor": "middle" }, tickLabel(t)));
  }
  grid.append(s("text", { x: (m.left + width - m.right) / 2, y: height - 6, "text-anchor": "middle", class: "axis" }, xLabel));
  if (yLabel) grid.append(s("text", { x: 12, y: m.top + (height - m.top - m.bottom) / 2, transform: `rotate(-90 12 ${m.top + (height - m.top - m.bottom) / 2})`, "text-anchor": "middle", class: "axis" }, yLabel));
  svg.append(grid);
  drawn.forEach((ser, i) => {
    const color = ser.color || PALETTE[i % PALETTE.length];
    const pts = ser.points.filter((p) => Number.isFinite(p[1]));
    const g = s("g", { class: "series", "data-name": ser.name });
    g.append(s("polyline", { points: pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": ser.dashed ? "6 4" : null }));
    if (pts.length <= 60) {
      for (const p of pts) {
        const dot = s("circle", { cx: px(p[0]).toFixed(1), cy: py(p[1]).toFixed(1), r: 3, fill: color });
        dot.append(s("title", {}, `${ser.name}: ${Number(p[1].toPrecision(5))} at ${xLabel} ${p[0]}`));
        g.append(dot);
      }
    }
    svg.append(g);
  });
  fig.append(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  drawn.forEach((ser, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = ser.color || PALETTE[i % PALETTE.length];
    if (ser.dashed) swatch.className = "dashed";
    item.append(swatch, document.createTextNode(ser.name));
    legend.append(item);
  });
  fig.append(legend);
  return fig;
}

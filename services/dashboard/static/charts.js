// Small SVG charts for the dashboard: no library, no network. Every mark carries data-label and data-value
// (the number drawn), so what a chart shows can be read back exactly, by a person or by a test.
"use strict";
const COLORS = ["var(--c0)", "var(--c1)", "var(--c2)", "var(--c3)", "var(--c4)", "var(--c5)", "var(--c6)"];

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function fmt(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const auto = Number.isInteger(Number(value)) || Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  const d = digits === undefined ? auto : digits;
  return Number(value).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

function svg(width, height, body) {
  return `<svg viewBox="0 0 ${width} ${height}" width="100%" preserveAspectRatio="xMinYMin meet" role="img">${body}</svg>`;
}

function empty(el, text) {
  el.innerHTML = `<div class="empty">${esc(text || "no data in this window")}</div>`;
}

// Horizontal bars: items = [{label, value, text?, key?}]; onClick(item) makes bars clickable.
function hbar(el, items, opts = {}) {
  if (!items.length) return empty(el);
  const width = 460, row = 22, labelW = opts.labelWidth || 150, valueW = 90;
  const max = Math.max(...items.map((i) => i.value), 1e-12);
  const body = items.map((item, n) => {
    const w = Math.max(1, ((width - labelW - valueW) * item.value) / max);
    const y = n * row;
    const color = item.color || COLORS[n % COLORS.length];
    return `<g class="bar${opts.onClick ? " clickable" : ""}" data-index="${n}" data-label="${esc(item.label)}" data-value="${item.value}">
      <text x="0" y="${y + 15}">${esc(item.label)}</text>
      <rect x="${labelW}" y="${y + 4}" width="${w}" height="${row - 8}" rx="2" fill="${color}"></rect>
      <text class="value" x="${labelW + w + 6}" y="${y + 15}">${esc(item.text !== undefined ? item.text : fmt(item.value))}</text></g>`;
  }).join("");
  el.innerHTML = svg(width, items.length * row + 4, body);
  if (opts.onClick) {
    el.querySelectorAll("g.bar").forEach((g) => g.addEventListener("click", () => opts.onClick(items[Number(g.dataset.index)])));
  }
}

// Vertical bars over time: points = [{t (unix s), value}].
function timebars(el, points, opts = {}) {
  if (!points.length) return empty(el);
  const width = 460, height = 150, left = 36, bottom = 18;
  const max = Math.max(...points.map((p) => p.value), 1);
  const step = (width - left) / points.length;
  const body = points.map((p, n) => {
    const h = ((height - bottom - 12) * p.value) / max;
    const x = left + n * step;
    const label = new Date(p.t * 1000).toISOString().slice(11, 16);
    return `<g class="bar" data-label="${label}" data-value="${p.value}"><title>${label} UTC: ${fmt(p.value, 0)}</title>
      <rect x="${x + 1}" y="${height - bottom - h}" width="${Math.max(step - 2, 1)}" height="${h}" fill="${opts.color || COLORS[0]}"></rect></g>`;
  }).join("");
  const first = new Date(points[0].t * 1000).toISOString().slice(11, 16);
  const last = new Date(points[points.length - 1].t * 1000).toISOString().slice(11, 16);
  const axis = `<line class="axis" x1="${left}" y1="${height - bottom}" x2="${width}" y2="${height - bottom}"></line>
    <text class="muted" x="0" y="12">${fmt(max, 0)}</text><text class="muted" x="${left}" y="${height - 4}">${first}</text>
    <text class="muted" x="${width - 34}" y="${height - 4}">${last}</text>`;
  el.innerHTML = svg(width, height, axis + body);
}

// Lines over time: xs = unix seconds; series = [{name, values}].
function lines(el, xs, series) {
  if (!xs.length) return empty(el);
  const width = 460, height = 160, left = 44, bottom = 18, top = 18;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null);
  const max = Math.max(...all, 1);
  const x = (n) => left + (xs.length === 1 ? (width - left) / 2 : ((width - left - 6) * n) / (xs.length - 1));
  const y = (v) => height - bottom - ((height - bottom - top) * v) / max;
  const body = series.map((s, k) => {
    const color = COLORS[k % COLORS.length];
    const path = s.values.map((v, n) => `${n ? "L" : "M"}${x(n).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const dots = s.values.map((v, n) => `<circle class="point" data-label="${esc(s.name)}" data-value="${v}" cx="${x(n)}" cy="${y(v)}" r="2.5" fill="${color}"><title>${esc(s.name)}: ${fmt(v)} ms</title></circle>`).join("");
    return `<g class="series" data-label="${esc(s.name)}"><path d="${path}" fill="none" stroke="${color}" stroke-width="1.5"></path>${dots}</g>`;
  }).join("");
  const legend = series.map((s, k) => `<text x="${left + k * 60}" y="11" fill="${COLORS[k % COLORS.length]}" style="fill:${COLORS[k % COLORS.length]}">■ ${esc(s.name)}</text>`).join("");
  const axis = `<line class="axis" x1="${left}" y1="${height - bottom}" x2="${width}" y2="${height - bottom}"></line>
    <text class="muted" x="0" y="${top + 4}">${fmt(max, 0)}</text>`;
  el.innerHTML = svg(width, height, axis + legend + body);
}

// Grouped bars: groups = [{label, values: [..]}], names = series names (one colour each).
function grouped(el, groups, names) {
  if (!groups.length) return empty(el);
  const width = 460, height = 170, left = 40, bottom = 20, top = 16;
  const max = Math.max(...groups.flatMap((g) => g.values), 1e-9);
  const slot = (width - left) / groups.length, bw = Math.min(22, (slot - 10) / names.length);
  const body = groups.map((g, n) => {
    const bars = g.values.map((v, k) => {
      const h = ((height - bottom - top) * v) / max;
      const x = left + n * slot + 5 + k * bw;
      return `<g class="bar" data-label="${esc(g.label)} ${esc(names[k])}" data-value="${v}"><title>${esc(g.label)} ${esc(names[k])}: ${fmt(v)} ms</title>
        <rect x="${x}" y="${height - bottom - h}" width="${bw - 2}" height="${h}" fill="${COLORS[k % COLORS.length]}"></rect></g>`;
    }).join("");
    return `${bars}<text x="${left + n * slot + 5}" y="${height - 5}">${esc(g.label)}</text>`;
  }).join("");
  const legend = names.map((s, k) => `<text x="${left + k * 50}" y="11" style="fill:${COLORS[k % COLORS.length]}">■ ${esc(s)}</text>`).join("");
  const axis = `<line class="axis" x1="${left}" y1="${height - bottom}" x2="${width}" y2="${height - bottom}"></line>
    <text class="muted" x="0" y="${top + 4}">${fmt(max, 0)}</text>`;
  el.innerHTML = svg(width, height, axis + legend + body);
}

// 100% stacked horizontal bars: rows = [{label, parts: [{name, value}]}] where values are percentages.
function stacked(el, rows) {
  if (!rows.length) return empty(el);
  const width = 940, row = 34, labelW = 110;
  const names = rows[0].parts.map((p) => p.name);
  const body = rows.map((r, n) => {
    let x = labelW;
    const y = n * row + 20;
    const parts = r.parts.map((p, k) => {
      const w = ((width - labelW) * p.value) / 100;
      const seg = `<g class="bar" data-label="${esc(r.label)} ${esc(p.name)}" data-value="${p.value}"><title>${esc(p.name)}: ${fmt(p.value, 1)}%</title>
        <rect x="${x}" y="${y}" width="${w}" height="${row - 10}" fill="${COLORS[k % COLORS.length]}"></rect>
        ${w > 34 ? `<text x="${x + 4}" y="${y + 16}" style="fill:#0f1419">${fmt(p.value, 1)}%</text>` : ""}</g>`;
      x += w;
      return seg;
    }).join("");
    return `<text x="0" y="${y + 16}">${esc(r.label)}</text>${parts}`;
  }).join("");
  const legend = names.map((s, k) => `<text x="${labelW + k * 118}" y="12" style="fill:${COLORS[k % COLORS.length]}">■ ${esc(s.replace("_", " "))}</text>`).join("");
  el.innerHTML = svg(width, rows.length * row + 24, legend + body);
}

function table(el, columns, rows) {
  if (!rows.length) return empty(el, "no requests");
  const head = columns.map((c) => `<th>${esc(c.title)}</th>`).join("");
  const body = rows.map((r) => `<tr>${columns.map((c) => `<td class="${c.numeric ? "n" : ""}">${c.html ? c.html(r) : esc(r[c.key])}</td>`).join("")}</tr>`).join("");
  el.innerHTML = `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

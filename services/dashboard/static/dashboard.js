// The dashboard: fetches /api/summary for the window (?since=&until= fix it; otherwise the last N minutes,
// refreshed every REFRESH_MS) and draws every panel; a click on a route or verdict lists its requests, each
// linking to its audit record.
"use strict";
const REFRESH_MS = 5000;
const params = new URLSearchParams(location.search);
const minutesSelect = document.getElementById("minutes");
if (params.get("minutes")) {
  const minutes = params.get("minutes");
  if (![...minutesSelect.options].some((o) => o.value === minutes)) minutesSelect.add(new Option(`${minutes} min`, minutes));
  minutesSelect.value = minutes;
}
if (params.get("since") && params.get("until")) {  // a fixed window: the selector would only mislead
  minutesSelect.add(new Option("fixed", minutesSelect.value));
  minutesSelect.selectedIndex = minutesSelect.options.length - 1;
  minutesSelect.disabled = true;
}
let refreshes = 0;

function query(extra = {}) {
  const q = new URLSearchParams();
  for (const name of ["since", "until"]) if (params.get(name)) q.set(name, params.get(name));
  q.set("minutes", minutesSelect.value);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q.toString();
}

function chart(name) { return document.querySelector(`[data-chart="${name}"]`); }
function q(row, n) { return row.q ? row.q[n] : null; }  // quantiles: [p50, p90, p95, p99]

function kpis(data) {
  const e2e = data.end_to_end[0] || { answers: 0, q: [null, null, null, null] };
  const sum = (rows, key) => rows.reduce((acc, r) => acc + Number(r[key] || 0), 0);
  const verdict = (name) => sum(data.verdicts.filter((v) => v.verdict === name), "answers");
  const items = [
    ["requests_per_s", "requests / s", fmt(data.requests_per_s, 2)],
    ["answers", "answers", fmt(e2e.answers, 0)],
    ["p50", "end-to-end p50 ms", fmt(q(e2e, 0), 0)],
    ["p95", "end-to-end p95 ms", fmt(q(e2e, 2), 0)],
    ["p99", "end-to-end p99 ms", fmt(q(e2e, 3), 0)],
    ["cost", "cost USD", fmt(sum(data.routes, "cost_usd"), 4)],
    ["tokens", "tokens in + out", fmt(sum(data.routes, "tokens_in") + sum(data.routes, "tokens_out"), 0)],
    ["failovers", "failovers", fmt(sum(data.providers, "failovers"), 0)],
    ["blocks", "policy blocks", fmt(verdict("BLOCK"), 0)],
    ["escalations", "escalations", fmt(verdict("ESCALATE"), 0)],
    ["dead_letters", "dead letters", fmt(sum(data.dead_letters, "dead_letters"), 0)],
  ];
  document.getElementById("kpis").innerHTML = items.map(([key, label, value]) =>
    `<div class="kpi" data-kpi="${key}"><div class="v">${esc(value)}</div><div class="k">${esc(label)}</div></div>`).join("");
}

function render(data) {
  kpis(data);
  timebars(chart("throughput"), data.throughput.map((r) => ({ t: r.t, value: Number(r.answers) })));
  const series = data.end_to_end_series;
  lines(chart("latency"), series.map((r) => r.t), [
    { name: "p50", values: series.map((r) => q(r, 0)) },
    { name: "p95", values: series.map((r) => q(r, 2)) },
    { name: "p99", values: series.map((r) => q(r, 3)) },
  ]);
  grouped(chart("stages"), data.stages.map((s) => ({ label: s.stage, values: [q(s, 0), q(s, 2), q(s, 3)] })), ["p50", "p95", "p99"]);
  hbar(chart("routes"), data.routes.map((r) => ({ label: r.route, value: Number(r.answers), key: r.route })),
    { onClick: (item) => drill({ route: item.key }, `route ${item.key}`), labelWidth: 170 });
  hbar(chart("providers"), data.providers.flatMap((p) => [
    { label: `${p.provider} answers`, value: Number(p.answers) },
    { label: `${p.provider} failovers`, value: Number(p.failovers), color: "var(--c2)" },
  ]), { onClick: (item) => drill({ provider: item.label.split(" ")[0] }, item.label) });
  table(document.querySelector('[data-table="model_calls"]'), [
    { title: "provider", key: "provider" }, { title: "model", key: "model" },
    { title: "calls", key: "total_calls", numeric: true }, { title: "ok", key: "ok", numeric: true },
    { title: "timeouts", key: "timeouts", numeric: true }, { title: "errors", key: "errors", numeric: true },
    { title: "p95 ms", numeric: true, html: (r) => esc(fmt(q(r, 2), 0)) },
  ], data.model_calls);
  hbar(chart("cost"), data.routes.filter((r) => Number(r.tokens_in) + Number(r.tokens_out) > 0).map((r) => ({
    label: r.route, value: Number(r.cost_usd),
    text: `$${fmt(Number(r.cost_usd), 4)} · ${fmt(Number(r.tokens_in) + Number(r.tokens_out), 0)} tok`,
  })), { labelWidth: 170 });
  hbar(chart("verdicts"), data.verdicts.map((v) => ({ label: v.verdict, value: Number(v.answers), key: v.verdict,
    color: { ALLOW: "var(--c3)", MASK: "var(--c0)", BLOCK: "var(--c2)", ESCALATE: "var(--c1)" }[v.verdict] })),
    { onClick: (item) => drill({ verdict: item.key }, `verdict ${item.key}`) });
  hbar(chart("rules"), data.rules.map((r) => ({ label: `${r.rule_id}@${r.rule_version} ${r.action}`, value: Number(r.matches) })),
    { labelWidth: 240 });
  hbar(chart("dead_letters"), data.dead_letters.map((d) => ({ label: `${d.stage}: ${d.error_type}`, value: Number(d.dead_letters) })),
    { labelWidth: 220 });
  hbar(chart("lag"), data.lag.map((l) => ({ label: l.stage, value: Number(l.lag) })), {});
  stacked(chart("split"), [
    { label: "measured", parts: data.split.map((s) => ({ name: s.category, value: s.percent })) },
    { label: "reference", parts: data.split.map((s) => ({ name: s.category, value: s.reference_percent })) },
  ]);
  hbar(chart("feedback"), data.feedback.flatMap((f) => {
    const rows = [{ label: f.kind.toLowerCase().replace("_", " "), value: Number(f.events) }];
    if (Number(f.rated)) rows.push({ label: "average rating", value: Number(f.rating_sum) / Number(f.rated), text: fmt(Number(f.rating_sum) / Number(f.rated), 2) });
    if (Number(f.low_ratings)) rows.push({ label: "ratings of 1–2", value: Number(f.low_ratings), color: "var(--c2)" });
    return rows;
  }), { labelWidth: 170 });
}

async function drill(filter, title) {
  document.getElementById("drill-title").textContent = title;
  const response = await fetch(`/api/requests?${query(filter)}`);
  if (response.status === 401) { location.reload(); return; }  // signed out: the page shows the sign-in form
  const rows = await response.json();
  table(document.querySelector('[data-table="requests"]'), [
    { title: "request", html: (r) => `<a href="/audit/${encodeURIComponent(r.request_id)}">${esc(r.request_id)}</a>` },
    { title: "store", key: "store_id" }, { title: "route", key: "route" }, { title: "provider", key: "provider" },
    { title: "verdict", key: "verdict" }, { title: "end-to-end ms", key: "end_to_end_ms", numeric: true },
    { title: "cost USD", key: "cost", numeric: true }, { title: "audited at (UTC)", key: "audited" },
  ], rows);
  document.getElementById("drill").scrollIntoView({ behavior: "smooth" });
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch(`/api/summary?${query()}`);
    if (response.status === 401) { location.reload(); return; }  // signed out: the page shows the sign-in form
    if (!response.ok) throw new Error(await response.text());
    const data = await response.json();
    render(data);
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    document.body.dataset.since = data.since;
    document.body.dataset.until = data.until;
    status.textContent = `${data.since.slice(11, 19)}–${data.until.slice(11, 19)} UTC · updated ${new Date().toISOString().slice(11, 19)}`;
  } catch (error) {
    status.textContent = `ClickHouse unavailable: ${error.message}`;
  }
}

minutesSelect.addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);

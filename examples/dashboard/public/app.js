// The dashboard page: plain JavaScript, no build step.
//
// INIT.rhai's timer reads the server's /metrics once a second and keeps
// a summary in the store. This page runs the plug dashboard/watch, which
// streams that summary as SYNC replies (only the changed bytes travel;
// the client rebuilds the whole object) for 8.5 s and ends; the page
// then runs it again. dashboard/history seeds the charts on (re)connect.
import { SsocketClient, EventType } from '/ssocket.js';

const $ = (id) => document.getElementById(id);
const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
const client = new SsocketClient(url, { reconnect: true });

const WINDOW_MS = 120_000; // what the charts show
// Streams run for seconds by design: their run time is not a cost.
const STREAMS = new Set(['dashboard/watch']);
const PALETTE = ['#4ea1ff', '#f0883e', '#3fb950', '#d2a8ff', '#ff7b72', '#e3b341', '#79c0ff', '#56d364'];
const colors = new Map(); // plug -> colour, in order of appearance

// What the page knows, also for tests and the curious (window.dashboard).
const state = window.dashboard = {
  syncs: 0,        // SYNC replies received
  summaries: 0,    // summaries drawn
  streams: 0,      // dashboard/watch invocations that ended (the page re-subscribes)
  last: null,      // the latest summary
  points: [],      // [{at, connections, mps, rps, run_us}] for the charts
};

// Count SYNC replies as they arrive ('*' sees every message, with its
// type; the payload handed on is already the full object).
client.on('*', (payload, meta) => {
  if (meta.type === EventType.SYNC) state.syncs++;
});

// ---- the stream ----

async function watch() {
  for (;;) {
    try {
      await client.ready;
      for await (const summary of client.stream('dashboard/watch', {})) update(summary);
      state.streams++; // the plug ended (its time limit): run it again
    } catch (e) {
      if (e.code !== 'closed') showError(e);
      await new Promise((r) => setTimeout(r, 1000)); // then wait for the reconnect
    }
  }
}

async function loadHistory() {
  try {
    const { points } = await client.request('dashboard/history', {});
    const newer = state.points.filter((p) => p.at > (points.at(-1)?.at ?? 0));
    state.points = [...points, ...newer];
    draw();
  } catch (e) {
    showError(e);
  }
}

function update(s) {
  state.last = s;
  state.summaries++;
  if (!state.points.length || s.at > state.points.at(-1).at) {
    const runUs = Object.fromEntries(Object.entries(s.plugs).filter(([, p]) => p.last_us > 0).map(([name, p]) => [name, p.last_us]));
    state.points.push({ at: s.at, connections: s.connections, mps: s.messages_per_second, rps: s.replies_per_second, run_us: runUs });
  }
  const cutoff = s.at - WINDOW_MS;
  while (state.points.length && state.points[0].at < cutoff) state.points.shift();
  draw();
}

// ---- drawing ----

function draw() {
  const s = state.last;
  if (s) {
    setValue('connections', s.connections);
    setValue('mps', s.messages_per_second, 1);
    setValue('rps', s.replies_per_second, 1);
    setValue('in-flight', s.in_flight);
    setValue('errors', s.errors_total);
    setValue('memory', s.memory_mb, 1);
    $('sync-info').textContent = `${state.syncs} SYNC replies · stream ${state.streams + 1} · ${new Date(s.at).toLocaleTimeString([], { hour12: false })}`;
    drawTable(s.plugs);
    const codes = Object.entries(s.errors).filter(([, n]) => n > 0).map(([code, n]) => `${code} ×${n}`);
    $('error-codes').textContent = codes.length ? `errors sent: ${codes.join(', ')}` : 'no errors sent';
  }
  const pts = state.points;
  lineChart($('chart-connections'), [{ name: 'connections', color: PALETTE[0], area: true, points: pts.map((p) => [p.at, p.connections]) }], { integer: true });
  lineChart($('chart-mps'), [
    { name: 'messages', color: '#4ea1ff', area: true, points: pts.map((p) => [p.at, p.mps]) },
    { name: 'replies', color: '#3fb950', dashed: true, points: pts.map((p) => [p.at, p.rps]) },
  ]);
  const plugs = [...new Set(pts.flatMap((p) => Object.keys(p.run_us ?? {})))].filter((n) => !STREAMS.has(n)).sort();
  lineChart($('chart-plugs'), plugs.map((name) => ({
    name, color: colorOf(name), points: pts.map((p) => [p.at, p.run_us?.[name] ? p.run_us[name] / 1000 : null]),
  })), { log: true, unit: 'ms' });
  $('plugs-legend').replaceChildren(...plugs.map((name) => {
    const span = el('span', { textContent: name });
    span.style.setProperty('--c', colorOf(name));
    return span;
  }));
}

function setValue(id, v, digits = 0) {
  $(id).textContent = v == null ? '–' : Number(v).toFixed(digits);
  $(id).dataset.value = String(v);
}

function colorOf(name) {
  if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
  return colors.get(name);
}

function drawTable(plugs) {
  const ms = (us) => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
  const rows = Object.entries(plugs).sort(([a], [b]) => a.localeCompare(b)).map(([name, p]) => {
    const swatch = el('span', { className: 'swatch' });
    swatch.style.setProperty('--c', STREAMS.has(name) ? 'var(--muted)' : colorOf(name));
    const tr = el('tr', {},
      el('td', {}, swatch, name),
      el('td', { textContent: String(p.messages) }),
      el('td', { textContent: p.calls ? ms(p.avg_us) : '' }),
      el('td', { textContent: p.last_us ? ms(p.last_us) : '' }));
    if (STREAMS.has(name)) tr.title = 'a stream: it runs for 8.5 s by design (not charted)';
    tr.dataset.plug = name;
    tr.dataset.calls = String(p.calls);
    return tr;
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { className: 'note', colSpan: 4, textContent: 'no plugs' })));
  $('plugs-table').tBodies[0].replaceChildren(...rows);
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// Lines over the last WINDOW_MS (or since the first point, at least
// 30 s): series [{name, color, area?, dashed?, points: [[time,
// value|null]]}]. A null value, or a second without a point, breaks the
// line; a lone point is a dot. Each path says how many points it drew
// (data-points).
function lineChart(target, series, { log = false, integer = false, unit = '' } = {}) {
  const W = 600, H = 200, L = 46, R = 10, T = 10, B = 22;
  const now = state.points.at(-1)?.at ?? Date.now();
  const span = Math.min(WINDOW_MS, Math.max(30_000, now - (state.points[0]?.at ?? now)));
  const t0 = now - span;
  const values = series.flatMap((s) => s.points.filter(([t, v]) => t >= t0 && v != null && (!log || v > 0)).map(([, v]) => v));
  let lo, hi, y;
  if (log) {
    lo = 10 ** Math.floor(Math.log10(Math.min(...values, 1)));
    hi = 10 ** Math.ceil(Math.log10(Math.max(...values, lo * 10)));
    if (hi <= lo) hi = lo * 10;
    y = (v) => T + (H - T - B) * (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
  } else {
    lo = 0;
    const max = Math.max(...values, integer ? 4 : 1);
    hi = integer ? Math.ceil(max / 4) * 4 : niceMax(max);
    y = (v) => T + (H - T - B) * (1 - v / hi);
  }
  const x = (t) => L + (W - L - R) * ((t - t0) / span);
  const nodes = [];
  // Grid and labels: four steps, or one per decade on a log scale.
  const ticks = log
    ? Array.from({ length: Math.round(Math.log10(hi / lo)) + 1 }, (_, i) => lo * 10 ** i)
    : [0, 1, 2, 3, 4].map((i) => (hi * i) / 4);
  for (const v of ticks) {
    nodes.push(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    nodes.push(svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, label(v) + (unit && v === hi ? ` ${unit}` : '')));
  }
  const ago = (ms) => (ms >= 60_000 ? `−${+(ms / 60_000).toFixed(1)} min` : `−${Math.round(ms / 1000)} s`);
  for (const [t, text] of [[t0, ago(span)], [t0 + span / 2, ago(span / 2)], [now, 'now']]) {
    nodes.push(svg('text', { x: x(t), y: H - 6, 'text-anchor': t === now ? 'end' : t === t0 ? 'start' : 'middle' }, text));
  }
  for (const s of series) {
    // Runs of points one second apart; a gap starts a new run.
    const runs = [];
    let prevT = null;
    for (const [t, v] of s.points) {
      if (t < t0) continue;
      if (v == null || (log && v <= 0)) { prevT = null; continue; }
      if (prevT === null || t - prevT > 2500) runs.push([]);
      runs.at(-1).push([x(t).toFixed(1), y(v).toFixed(1)]);
      prevT = t;
    }
    const n = runs.reduce((sum, r) => sum + r.length, 0);
    const d = runs.map((r) => r.map(([px, py], i) => `${i ? 'L' : 'M'}${px},${py}`).join('')).join('');
    if (s.area && !log) {
      for (const r of runs.filter((r) => r.length > 1)) {
        nodes.push(svg('path', { class: 'area', fill: s.color, d: `M${r.map((p) => p.join(',')).join('L')}L${r.at(-1)[0]},${y(0)}L${r[0][0]},${y(0)}Z` }));
      }
    }
    const line = svg('path', { class: 'line', stroke: s.color, d: d || 'M0,0', 'data-series': s.name, 'data-points': n });
    if (s.dashed) line.setAttribute('stroke-dasharray', '5 4');
    nodes.push(line);
    for (const r of runs.filter((r) => r.length === 1)) {
      nodes.push(svg('circle', { cx: r[0][0], cy: r[0][1], r: 2.5, fill: s.color }));
    }
  }
  target.replaceChildren(...nodes);
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((c) => c >= v);
}

function label(v) {
  if (v >= 1000) return `${+(v / 1000).toFixed(1)}k`;
  if (v >= 1 || v === 0) return String(+v.toFixed(1));
  return String(+v.toPrecision(2));
}

// ---- demo load ----

let loadTimer = null;
$('load').addEventListener('click', () => {
  const on = !loadTimer;
  if (on) {
    loadTimer = setInterval(() => {
      if (!client.connected) return;
      client.send('work', { n: 5000 + Math.floor(Math.random() * 15000) });
      client.send('ping', {});
    }, 100);
  } else {
    clearInterval(loadTimer);
    loadTimer = null;
  }
  $('load').setAttribute('aria-pressed', String(on));
  $('load').textContent = on ? 'Stop load' : 'Start load';
});
$('burst').addEventListener('click', () => {
  if (!client.connected) return;
  for (let i = 0; i < 200; i++) client.send('ping', {});
});

// ---- connection ----

function showError(e) {
  $('error').textContent = String(e?.message ?? e);
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { $('error').textContent = ''; }, 6000);
}
client.onError(showError);
client.onOpen(() => {
  $('status').dataset.state = 'open';
  $('status').textContent = 'connected';
  loadHistory();
});
client.onClose(({ willReconnect }) => {
  $('status').dataset.state = 'closed';
  $('status').textContent = willReconnect ? 'reconnecting…' : 'disconnected';
});

draw();
watch();

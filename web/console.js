// console.js: the web console's behaviour. Reads the node's status from
// /api/events (server-sent events, read with fetch so that an API key can
// go in the Authorization header, which EventSource cannot send) and draws
// it; rates (bytes/s, requests/s, tokens/s) are the differences between two
// documents over the time between them. The traffic graphs cover the last
// HISTORY_MS: when the page connects it asks the node for the points it kept
// (/api/history, one per 5 s, so a page opened now draws the recent past at
// once), then adds a point per document. The chat panel streams from this
// node's /v1/chat/completions on the same origin, and shows under each answer
// where its time went (the answer's `timings`: per stage of a split, and the
// hops).
//
// Everything shown comes from the mesh (model names, ids, reasons), so it
// is put on the page as text (textContent), never as HTML.
'use strict';

const KEY_STORE = 'llmesh.apiKey';
const state = {
  key: sessionStorage.getItem(KEY_STORE) || '',
  status: null,      // the last status document
  prev: null,        // the one before, with its time, for rates
  prevAt: 0, at: 0,
  rates: { peers: {}, models: {} },
  chat: [],          // [{role, content}]
  busy: null,        // AbortController of the running chat request
  history: new Map(), // model -> [{t, req, tok, ttft, queued}], the last HISTORY_MS, oldest first
  since: performance.now(), // the oldest point's time (or the page's start), for the graphs' span
  stageLive: new Map(), // "model/stage" -> {compute, send, at}: per-position ms over the last interval with work
  ringLive: new Map(),  // model -> {rt, at}: mean ring round trip over the last interval with steps
};
const HISTORY_MS = 10 * 60 * 1000;  // the node keeps as much (serve/console_history.h)
const LIVE_MS = 10000;              // a stage's "now" figures stay shown this long after its last work

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const shortId = (id) => (id || '').slice(0, 12);   // at least 8 hex digits, as the issue asks
function bytes(n) {
  if (!(n >= 0)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : Math.round(n)) + ' ' + u[i];
}
const rate = (n) => (n >= 0 ? bytes(n) + '/s' : '–');
const ms = (s) => (s >= 0 ? (s * 1000 < 10 ? (s * 1000).toFixed(1) : Math.round(s * 1000)) + ' ms' : '–');
const fixed = (x, d) => (x >= 0 ? x.toFixed(d) : '–');
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h.Authorization = 'Bearer ' + state.key;
  return h;
}
function notice(text) {
  const n = $('#notice');
  n.hidden = !text;
  n.textContent = text || '';
}
function needKey(why) {
  $('#key-form').hidden = false;
  notice(why);
}

// ---- status: /api/events, or polling /api/status when the node is full --

async function follow() {
  for (;;) {
    let polled = false;
    try {
      const res = await fetch('/api/events', { headers: headers(), cache: 'no-store' });
      if (res.status === 401) {
        setLive(false);
        needKey(state.key ? 'The API key was refused.' : 'This node needs an API key.');
        await waitForKey();
        continue;
      }
      if (res.status === 503) {
        // Too many watchers on this node: ask now and then instead.
        polled = true;
        if (!state.history.size) loadHistory();
        const s = await fetch('/api/status', { headers: headers(), cache: 'no-store' });
        if (s.ok) show(await s.json());
      } else if (res.ok && res.body) {
        loadHistory();
        await readEvents(res.body.getReader());
      }
    } catch (e) {
      // the node went away or restarted; try again below
    }
    if (!polled) setLive(false);
    await sleep(2000);
  }
}

async function readEvents(reader) {
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trimStart();
      }
      if (event === 'status' && data) {
        try { show(JSON.parse(data)); } catch (e) { /* a broken document: wait for the next */ }
      }
    }
    if (buf.length > 8 << 20) return;  // no end of event in 8 MiB: not our server
  }
}

const sleep = (t) => new Promise((r) => setTimeout(r, t));
let keyWaiter = null;
function waitForKey() { return new Promise((r) => { keyWaiter = r; }); }
function setLive(on) {
  const l = $('#live');
  l.dataset.live = on ? 'yes' : 'no';
  l.textContent = on ? 'live' : 'offline';
}

function show(s) {
  const now = performance.now();
  if (state.status) { state.prev = state.status; state.prevAt = state.at; }
  state.status = s;
  state.at = now;
  setLive(true);
  if (!$('#key-form').hidden && s) { notice(''); $('#key-form').hidden = true; }
  computeRates();
  drawSelf(s);
  drawTopology(s);
  drawMemory(s);
  drawPlans(s);
  drawTraffic(s);
  drawChatModels(s);
  drawJoin(s);
}

// Rates from the two last documents. A counter that went down (a new
// connection, a restarted node) gives no rate until the next document.
function computeRates() {
  const s = state.status, p = state.prev;
  const dt = (state.at - state.prevAt) / 1000;
  state.rates = { peers: {}, models: {} };
  if (!p || dt <= 0.05) return;
  const d = (a, b) => (a >= b ? (a - b) / dt : -1);
  const before = new Map((p.peers || []).map((x) => [x.id, x]));
  for (const x of s.peers || []) {
    const b = before.get(x.id);
    if (b && x.rx_bytes !== undefined && b.rx_bytes !== undefined)
      state.rates.peers[x.id] = { rx: d(x.rx_bytes, b.rx_bytes), tx: d(x.tx_bytes, b.tx_bytes) };
  }
  const tb = new Map((p.traffic || []).map((x) => [x.model, x]));
  for (const x of s.traffic || []) {
    const b = tb.get(x.model) || {};
    const dc = (x.ttft_count || 0) - (b.ttft_count || 0), di = (x.itl_count || 0) - (b.itl_count || 0);
    state.rates.models[x.model] = {
      req: d(x.requests || 0, b.requests || 0),
      tok: d(x.completion_tokens || 0, b.completion_tokens || 0),
      ttft: dc > 0 ? ((x.ttft_seconds || 0) - (b.ttft_seconds || 0)) / dc : -1,
      itl: di > 0 ? ((x.itl_seconds || 0) - (b.itl_seconds || 0)) / di : -1,
    };
  }
  stageRates(s, p);
  remember(state.at);
}

// Per stage of the plans this node coordinates: compute and send time per
// position over the last interval in which the stage computed something
// (the counters are totals since the plan started), and the ring's mean
// round trip over the decode steps of that interval. Kept LIVE_MS after
// the last work, so that a short answer's figures stay readable.
function stageRates(s, p) {
  const before = new Map((p.plans || []).filter((x) => x.counters).map((x) => [x.model + '/' + x.coordinator, x]));
  for (const plan of s.plans || []) {
    const b = before.get(plan.model + '/' + plan.coordinator);
    if (!plan.counters || !b || (b.stages || []).length !== (plan.stages || []).length) continue;
    plan.stages.forEach((st, i) => {
      const c = st.counters, cb = b.stages[i].counters;
      if (!c || !cb || b.stages[i].node !== st.node) return;
      const dn = c.tokens - cb.tokens;
      if (!(dn > 0)) return;
      state.stageLive.set(plan.model + '/' + i, {
        node: st.node, at: state.at,
        compute: (c.compute_ms - cb.compute_ms) / dn,
        send: c.send_ms !== undefined && cb.send_ms !== undefined ? (c.send_ms - cb.send_ms) / dn : -1,
      });
    });
    const pc = plan.counters, bc = b.counters, dr = pc.round_trips - bc.round_trips;
    if (dr > 0)
      state.ringLive.set(plan.model, { at: state.at,
        rt: (pc.round_trip_ms * pc.round_trips - bc.round_trip_ms * bc.round_trips) / dr });
  }
}

// One point per document and model into the history; points older than
// HISTORY_MS go, and so do models with no point left. TTFT is null when no
// generation finished between the two documents; the queue is null for a
// model not served here.
function remember(now) {
  const queued = new Map((state.status.traffic || []).map((x) => [x.model, x.queued]));
  for (const [model, r] of Object.entries(state.rates.models)) {
    if (!(r.req >= 0) || !(r.tok >= 0)) continue;   // a counter went down: no point
    if (!state.history.has(model)) state.history.set(model, []);
    const q = queued.get(model);
    state.history.get(model).push({ t: now, req: r.req, tok: r.tok, ttft: r.ttft >= 0 ? r.ttft * 1000 : null,
      queued: q >= 0 ? q : null });
  }
  forget(now);
}

function forget(now) {
  for (const [model, pts] of state.history) {
    while (pts.length && now - pts[0].t > HISTORY_MS) pts.shift();
    if (!pts.length) state.history.delete(model);
  }
}

// The node's history (/api/history): its points go before the page's own
// (those newer than its last point are kept), so a page opened now, or one
// that reconnects to a restarted node, shows what the node saw.
async function loadHistory() {
  let h;
  try {
    const res = await fetch('/api/history', { headers: headers(), cache: 'no-store' });
    if (!res.ok) return;
    h = await res.json();
  } catch (e) {
    return;   // an older node, or it went away: the page's own points will do
  }
  const now = performance.now(), ago = h.ago_ms || [];
  if (!ago.length) return;
  const newest = now - ago[ago.length - 1];
  const merged = new Map();
  for (const m of h.models || []) {
    const pts = ago.map((a, i) => ({ t: now - a, req: m.req_s[i], tok: m.tok_s[i], ttft: m.ttft_ms[i],
      queued: m.queued[i], node: true })).filter((p) => p.req !== null && p.tok !== null);
    merged.set(m.model, pts);
  }
  for (const [model, pts] of state.history) {
    const own = pts.filter((p) => !p.node && p.t > newest);
    merged.set(model, (merged.get(model) || []).concat(own));
  }
  state.history = merged;
  state.since = Math.min(state.since, now - ago[0]);
  forget(now);
  if (state.status) drawTraffic(state.status);
}

// A small line graph of one series of a model's history, scaled to its own
// maximum (the title and label give it). The right edge is now; the left is
// HISTORY_MS ago, or less while the page has not been open that long (at
// least a minute), so that the first minutes are not squeezed to the edge.
function spark(model, key, unit) {
  const W = 96, H = 22;
  const all = state.history.get(model) || [];
  const pts = all.filter((p) => p[key] !== null && p[key] !== undefined);
  const max = pts.reduce((m, p) => Math.max(m, p[key]), 0);
  const g = svg('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, width: W, height: H,
    'data-series': key, 'data-points': pts.length, 'data-node-points': pts.filter((p) => p.node).length,
    'data-max': max.toFixed(3), role: 'img',
    'aria-label': `${unit} over the last ${HISTORY_MS / 60000} minutes, at most ${max.toFixed(2)}` });
  g.append(svg('title', {}, `${unit} over the last ${HISTORY_MS / 60000} min (max ${max.toFixed(2)})`));
  if (pts.length >= 2) {
    const now = Math.max(state.at, pts[pts.length - 1].t);
    const span = Math.min(HISTORY_MS, Math.max(60000, now - state.since));
    const xy = pts.map((p) => [W - ((now - p.t) / span) * W, H - 2 - (max > 0 ? (p[key] / max) * (H - 4) : 0)]);
    g.append(svg('polyline', { points: xy.map(([x, y]) => x.toFixed(1) + ',' + y.toFixed(1)).join(' ') }));
  }
  return g;
}

function drawSelf(s) {
  const t = $('#self');
  t.textContent = '';
  t.append(el('span', { class: 'mono', title: s.node_id, text: shortId(s.node_id) }),
    ' · ' + s.role + ' · v' + s.version);
}

// Every node this one knows: itself first, then its peers.
function allNodes(s) {
  const self = {
    id: s.node_id, role: s.role, state: 'self', self: true, models: s.models || [],
    memory_bytes: s.memory_bytes, memory_used: s.memory_used,
    clients: s.clients_connected !== undefined ? s.clients_connected : null,
  };
  return [self, ...(s.peers || [])];
}

function drawTopology(s) {
  const nodes = allNodes(s);
  const body = $('#nodes tbody');
  body.textContent = '';
  for (const n of nodes) {
    const r = state.rates.peers[n.id] || {};
    const st = n.self ? 'self' : n.state;
    body.append(el('tr', { 'data-node': n.id, 'data-state': st },
      el('td', { class: 'mono', title: n.id, text: shortId(n.id) + (n.self ? ' (this node)' : '') }),
      el('td', { text: n.role }),
      el('td', {}, el('span', { class: 'state state-' + st, text: n.self ? 'this node' : st })),
      el('td', { class: 'num', text: n.clients === null || n.clients === undefined ? '–' : String(n.clients) }),
      el('td', { text: n.self ? '' : (n.link || 'none') }),
      el('td', { class: 'num', text: n.link ? fixed(n.rtt_ms, 2) + ' ms' : '' }),
      el('td', { class: 'num', text: n.link ? rate(r.rx) : '' }),
      el('td', { class: 'num', text: n.link ? rate(r.tx) : '' })));
  }
  // A star: this node in the middle, its peers around it, a line per link
  // (dashed when relayed), each node coloured by its state.
  const g = $('#graph');
  g.textContent = '';
  const cx = 200, cy = 110, peers = nodes.slice(1);
  const pos = peers.map((_, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(peers.length, 1);
    return [cx + 150 * Math.cos(a), cy + 80 * Math.sin(a)];
  });
  peers.forEach((p, i) => {
    if (p.link) g.append(svg('line', { x1: cx, y1: cy, x2: pos[i][0], y2: pos[i][1], class: p.link }));
  });
  const colour = (st) => getComputedStyle(document.documentElement).getPropertyValue('--' + (st === 'self' ? 'alive' : st)) || '#888';
  const dot = (x, y, n) => {
    const st = n.self ? 'self' : n.state;
    const c = svg('circle', { cx: x, cy: y, r: n.self ? 12 : 9, fill: colour(st).trim() || '#888' });
    c.append(svg('title', {}, n.id + ' · ' + n.role + ' · ' + st));
    g.append(c, svg('text', { x: x, y: y + 22, 'text-anchor': 'middle' }, shortId(n.id).slice(0, 8) + ' ' + st));
  };
  peers.forEach((p, i) => dot(pos[i][0], pos[i][1], p));
  dot(cx, cy, nodes[0]);
}

// Model colours, stable per name.
function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return 'hsl(' + (h % 360) + ' 60% 50%)';
}

// What each node holds, from the plans: the models it runs a stage of
// (a solo model is one stage). Everything a node reserves is for some model
// part (weights, KV caches, scratch), so its memory in use is shared among
// those models in proportion to each one's need times its share of layers.
function usageByNode(s) {
  const use = new Map();
  for (const p of s.plans || []) {
    const stages = p.stages || [];
    const layers = stages.length ? stages[stages.length - 1].layers[1] : 0;
    for (const st of stages) {
      const w = layers ? ((p.need_bytes || 0) * (st.layers[1] - st.layers[0])) / layers : 0;
      const m = use.get(st.node) || [];
      m.push({ model: p.model, weight: w || 1 });
      use.set(st.node, m);
    }
  }
  return use;
}

function drawMemory(s) {
  const box = $('#memory');
  box.textContent = '';
  const use = usageByNode(s);
  for (const n of allNodes(s)) {
    if (n.state === 'left' || (n.role === 'client' && !n.memory_bytes)) continue;
    const total = n.memory_bytes || 0, used = n.memory_used || 0;
    const parts = use.get(n.id) || [];
    const sum = parts.reduce((a, x) => a + x.weight, 0);
    const bar = el('div', { class: 'bar', title: bytes(used) + ' of ' + bytes(total) });
    const legend = el('div', { class: 'legend' });
    let shown = 0;
    for (const part of parts) {
      const b = Math.round((used * part.weight) / sum);
      if (b <= 0) continue;
      shown += b;
      const span = el('span', { title: part.model + ': ' + bytes(b) });
      span.style.width = (total ? (100 * b) / total : 0) + '%';
      span.style.background = hue(part.model);
      bar.append(span);
      const i = el('i');
      i.style.background = hue(part.model);
      legend.append(el('span', {}, i, part.model + ' ' + bytes(b)));
    }
    if (used > shown + 1024) {
      const span = el('span', { title: 'other: ' + bytes(used - shown) });
      span.style.width = (total ? (100 * (used - shown)) / total : 0) + '%';
      span.style.background = 'var(--muted)';
      bar.append(span);
      const i = el('i');
      i.style.background = 'var(--muted)';
      legend.append(el('span', {}, i, 'other ' + bytes(used - shown)));
    }
    const runs = [];
    for (const p of s.plans || []) {
      const i = (p.stages || []).findIndex((st) => st.node === n.id);
      if (i >= 0 && p.stages.length > 1) runs.push(p.model + ' (stage ' + i + ')');
    }
    for (const m of n.models || []) if (!runs.some((r) => r.startsWith(m + ' '))) runs.push(m);
    const served = runs.join(', ') || 'no model';
    box.append(el('div', { class: 'node-mem', 'data-mem-node': n.id },
      el('div', { class: 'head' },
        el('span', { class: 'mono', title: n.id, text: shortId(n.id) + (n.self ? ' (this node)' : '') }),
        el('span', { class: 'small muted', text: bytes(used) + ' / ' + bytes(total) })),
      bar, legend,
      el('div', { class: 'small', text: 'serves: ' + served })));
  }
}

function drawPlans(s) {
  const box = $('#plans');
  box.textContent = '';
  const plans = s.plans || [];
  if (!plans.length) box.append(el('p', { class: 'muted', text: 'No model in the mesh yet.' }));
  for (const p of plans) {
    const split = (p.stages || []).length > 1;
    const head = el('div', { class: 'row' },
      el('strong', { text: p.model }),
      el('span', { class: 'state state-' + p.state, text: p.state }),
      el('span', { class: 'small muted', text: (split ? p.stages.length + ' stages' : 'solo') +
        ' · coordinator ' + shortId(p.coordinator) + ' · needs ' + bytes(p.need_bytes) }));
    const div = el('div', { class: 'plan', 'data-plan': p.model, 'data-plan-state': p.state }, head);
    if (p.reason) div.append(el('p', { class: 'small', text: p.reason }));
    const tb = el('tbody');
    (p.stages || []).forEach((st, i) => {
      const c = st.counters;
      const pct = st.total_bytes ? Math.min(100, (100 * st.fetched_bytes) / st.total_bytes) : (st.state === 'ready' ? 100 : 0);
      const bar = el('div', { class: 'progress', title: bytes(st.fetched_bytes) + ' of ' + bytes(st.total_bytes) });
      const fill = el('span');
      fill.style.width = pct + '%';
      bar.append(fill);
      tb.append(el('tr', { 'data-stage': i, 'data-stage-node': st.node },
        el('td', { class: 'num', text: String(i) }),
        el('td', { class: 'mono', title: st.node, text: shortId(st.node) }),
        el('td', { class: 'mono', text: '[' + st.layers[0] + ', ' + st.layers[1] + ')' }),
        el('td', {}, el('span', { class: 'state state-' + st.state, text: st.state })),
        el('td', { title: bytes(st.fetched_bytes) + ' of ' + bytes(st.total_bytes) + ' (' + Math.round(pct) + '%)' }, bar),
        el('td', { class: 'num', text: c ? String(c.tokens) : '–' }),
        stageTime(p.model, i, st, 'compute', 'compute_ms'),
        stageTime(p.model, i, st, 'send', 'send_ms')));
    });
    div.append(el('div', { class: 'scroll' }, el('table', { class: 'stages' },
      el('thead', {}, el('tr', {}, ...['#', 'node', 'layers', 'state', 'fetch/load', 'positions',
        'compute/pos', 'send/pos'].map((h) => el('th', { text: h })))), tb)));
    if (p.counters && p.counters.round_trips) {
      const live = state.ringLive.get(p.model);
      const now = live && state.at - live.at < LIVE_MS;
      div.append(el('p', { class: 'small muted', 'data-ring-ms': fixed(now ? live.rt : p.counters.round_trip_ms, 3),
        text: 'ring round trip ' + (now ? fixed(live.rt, 2) + ' ms now, ' : '') +
        fixed(p.counters.round_trip_ms, 2) + ' ms mean over ' +
        p.counters.round_trips + ' decode steps · breaks ' + p.counters.breaks }));
    }
    box.append(div);
  }
}

// A stage's time per position: over the last interval it worked in (shown
// as it is), else its mean since the plan started (marked "avg"). Stage 0
// (the coordinator's own layers) has compute only.
function stageTime(model, i, st, key, field) {
  const c = st.counters;
  if (!c || c[field] === undefined || !c.tokens) return el('td', { class: 'num', text: '–' });
  const live = state.stageLive.get(model + '/' + i);
  const mean = c[field] / c.tokens;
  if (live && live.node === st.node && state.at - live.at < LIVE_MS && live[key] >= 0)
    return el('td', { class: 'num', 'data-live': 'yes', ['data-' + key + '-ms']: live[key].toFixed(4),
      title: 'since the last update; ' + fixed(mean, 3) + ' ms on average', text: fixed(live[key], 3) + ' ms' });
  return el('td', { class: 'num muted', 'data-live': 'no', ['data-' + key + '-ms']: mean.toFixed(4),
    title: 'mean since the plan started', text: fixed(mean, 3) + ' ms avg' });
}

function drawTraffic(s) {
  const body = $('#traffic tbody');
  body.textContent = '';
  for (const t of s.traffic || []) {
    if (!t.model) continue;
    const r = state.rates.models[t.model] || {};
    body.append(el('tr', { 'data-traffic': t.model },
      el('td', { text: t.model }),
      el('td', { class: 'num', text: fixed(r.req, 2) }),
      el('td', { class: 'num', text: fixed(r.tok, 1) }),
      el('td', { class: 'num', text: ms(r.ttft >= 0 ? r.ttft : (t.ttft_count ? t.ttft_seconds / t.ttft_count : -1)) }),
      el('td', { class: 'num', text: ms(r.itl >= 0 ? r.itl : (t.itl_count ? t.itl_seconds / t.itl_count : -1)) }),
      el('td', { class: 'num', text: t.lanes !== undefined ? t.lanes_busy + ' / ' + t.lanes : '–' }),
      el('td', { class: 'num', text: t.queued !== undefined ? String(t.queued) : '–' })));
    // Under it, the last HISTORY_MS of each series, one small graph each.
    const graph = (key, label, unit) => el('figure', {}, el('figcaption', { class: 'small muted', text: label }),
      spark(t.model, key, unit));
    body.append(el('tr', { class: 'graphs', 'data-traffic-graphs': t.model }, el('td', { colspan: 7 },
      el('div', { class: 'sparks', title: 'the last ' + HISTORY_MS / 60000 + ' minutes' },
        graph('req', 'req/s', 'requests/s'), graph('tok', 'tok/s', 'tokens/s'),
        graph('ttft', 'TTFT', 'time to first token, ms'), graph('queued', 'queued', 'requests queued')))));
  }
  if (!body.children.length)
    body.append(el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No requests through this node yet.' })));
}

// ---- chat ----------------------------------------------------------------

function drawChatModels(s) {
  const names = new Set(s.models || []);
  for (const p of s.peers || []) if (p.state === 'alive') for (const m of p.models || []) names.add(m);
  for (const p of s.plans || []) if (p.state === 'ready') names.add(p.model);
  const sel = $('#chat-model');
  const cur = sel.value;
  const list = [...names].sort();
  if (list.join('\n') === [...sel.options].map((o) => o.value).join('\n')) return;
  sel.textContent = '';
  for (const m of list) sel.append(el('option', { value: m, text: m }));
  if (list.includes(cur)) sel.value = cur;
}

function chatLog(role, text) {
  const m = el('div', { class: 'msg ' + role, 'data-role': role, text });
  $('#chat-log').append(m);
  m.scrollIntoView({ block: 'nearest' });
  return m;
}

async function send(ev) {
  ev.preventDefault();
  if (state.busy) { state.busy.abort(); return; }
  const text = $('#chat-input').value.trim();
  const model = $('#chat-model').value;
  if (!text || !model) return;
  $('#chat-input').value = '';
  state.chat.push({ role: 'user', content: text });
  chatLog('user', text);
  const out = chatLog('assistant', '');
  const stats = $('#chat-stats');
  const ctl = new AbortController();
  state.busy = ctl;
  $('#chat-send').textContent = 'Stop';
  const t0 = performance.now();
  let first = 0, chunks = 0, usage = null, answer = '', timings = null;
  const update = () => {
    const now = performance.now();
    const n = usage ? usage.completion_tokens : chunks;
    const tps = first && now > first && n > 1 ? ((n - 1) * 1000) / (now - first) : 0;
    stats.textContent = n + ' tokens · ' + (tps ? tps.toFixed(1) : '–') + ' tok/s · first token ' +
      (first ? Math.round(first - t0) + ' ms' : '–');
    stats.dataset.tokens = n;
  };
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST', signal: ctl.signal,
      headers: headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify({ model, messages: state.chat, stream: true, max_tokens: 256,
        stream_options: { include_usage: true } }),
    });
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try { msg = (await res.json()).error.message || msg; } catch (e) { /* not JSON */ }
      if (res.status === 401) needKey('This node needs an API key.');
      throw new Error(msg);
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '', done = false;
    while (!done) {
      const r = await reader.read();
      if (r.done) break;
      buf += dec.decode(r.value, { stream: true });
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        for (const line of block.split('\n')) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') { done = true; break; }
          let j;
          try { j = JSON.parse(data); } catch (e) { continue; }
          if (j.error) throw new Error(j.error.message || 'error');
          if (j.usage) usage = j.usage;
          if (j.timings) timings = j.timings;   // in the chunk with the finish reason
          const delta = j.choices && j.choices[0] && j.choices[0].delta;
          if (delta && delta.content) {
            if (!first) first = performance.now();
            chunks++;
            answer += delta.content;
            out.textContent = answer;
          }
        }
      }
      update();
    }
    update();
    if (timings) {
      const box = timingsView(timings);
      out.after(box);
      box.scrollIntoView({ block: 'nearest' });
    }
    state.chat.push({ role: 'assistant', content: answer });
    out.dataset.done = 'yes';
  } catch (e) {
    if (e.name === 'AbortError') { out.dataset.done = 'stopped'; state.chat.push({ role: 'assistant', content: answer }); }
    else { out.classList.add('error'); out.textContent = answer + (answer ? '\n' : '') + 'error: ' + e.message; out.dataset.done = 'error'; state.chat.pop(); }
  } finally {
    state.busy = null;
    $('#chat-send').textContent = 'Send';
  }
}

// Where an answer's time went, from its `timings`: the engine's prompt and
// generation times, and for a split model each stage's compute and waits
// (its share of the batch steps it ran in) and the hops between them (the
// round trips less the stages' times: wire, QUIC, framing), as a bar and
// as figures.
function timingsView(t) {
  const stages = t.stages || [];
  const box = el('div', { class: 'timings small', 'data-stages': stages.length });
  box.append(el('div', { class: 'muted', text: 'prompt ' + t.prompt_n + ' tokens in ' + fixed(t.prompt_ms, 1) +
    ' ms' + (t.cache_n ? ' (' + t.cache_n + ' cached)' : '') + ' · ' + t.predicted_n + ' tokens in ' +
    fixed(t.predicted_ms, 1) + ' ms (' + fixed(t.predicted_per_second, 1) + ' tok/s)' }));
  if (!stages.length) return box;
  const parts = stages.map((st, i) => ({ label: 'stage ' + i, ms: st.compute_ms + st.wait_ms, colour: 'hsl(' + ((i * 97 + 210) % 360) + ' 55% 50%)' }));
  parts.push({ label: 'hops', ms: t.hop_ms, colour: 'var(--muted)' });
  const total = parts.reduce((a, x) => a + Math.max(0, x.ms), 0);
  const bar = el('div', { class: 'bar', title: 'where the answer\'s time went' });
  const legend = el('div', { class: 'legend' });
  for (const x of parts) {
    const span = el('span', { title: x.label + ': ' + fixed(x.ms, 1) + ' ms' });
    span.style.width = (total > 0 ? (100 * Math.max(0, x.ms)) / total : 0) + '%';
    span.style.background = x.colour;
    bar.append(span);
    const i = el('i');
    i.style.background = x.colour;
    legend.append(el('span', {}, i, x.label + ' ' + fixed(x.ms, 1) + ' ms'));
  }
  const rows = stages.map((st, i) => el('tr', { 'data-timing-stage': i, 'data-compute-ms': st.compute_ms,
    'data-wait-ms': st.wait_ms },
    el('td', { text: 'stage ' + i }),
    el('td', { class: 'mono', title: st.node, text: shortId(st.node) }),
    el('td', { class: 'mono', text: '[' + st.layers[0] + ', ' + st.layers[1] + ')' }),
    el('td', { class: 'num', text: fixed(st.compute_ms, 2) + ' ms' }),
    el('td', { class: 'num', text: fixed(st.wait_ms, 2) + ' ms' })));
  rows.push(el('tr', { 'data-timing-hops': '', 'data-hop-ms': t.hop_ms },
    el('td', { text: 'hops' }), el('td', { colspan: 3, class: 'muted', text: 'network between the stages' }),
    el('td', { class: 'num', text: fixed(t.hop_ms, 2) + ' ms' })));
  box.append(bar, legend, el('div', { class: 'scroll' }, el('table', {},
    el('thead', {}, el('tr', {}, ...['', 'node', 'layers', 'compute', 'waits'].map((h) => el('th', { text: h })))),
    el('tbody', {}, ...rows))));
  return box;
}

// ---- add a node -------------------------------------------------------------

function drawJoin(s) {
  const cmd = $('#join-cmd'), client = $('#client-cmd'), copy = $('#join-copy');
  if (!s.token) {
    // A client has none; a member shows its token (which holds the mesh
    // secret) only on a console bound to loopback.
    cmd.textContent = s.role === 'client'
      ? 'This node is a client: it has no token to give. Use a member\'s console.'
      : 'This console is reachable from other machines, so it does not show the token (it holds ' +
        'the mesh secret). Open the console on the node\'s own machine, or use the token it printed.';
    client.textContent = '';
    copy.disabled = true;
    return;
  }
  cmd.textContent = 'llmesh serve --join ' + s.token;
  client.textContent = 'llmesh client --join ' + s.token;
  copy.disabled = false;
}

async function copyJoin() {
  const text = $('#join-cmd').textContent;
  const b = $('#join-copy');
  try {
    await navigator.clipboard.writeText(text);
    b.textContent = 'Copied';
  } catch (e) {
    // No clipboard (not a secure context): select the text for the user.
    const r = document.createRange();
    r.selectNodeContents($('#join-cmd'));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(r);
    b.textContent = 'Selected';
  }
  setTimeout(() => { b.textContent = 'Copy'; }, 1500);
}

document.addEventListener('DOMContentLoaded', () => {
  $('#key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.key = $('#key').value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    notice('');
    if (keyWaiter) { const w = keyWaiter; keyWaiter = null; w(); }
  });
  $('#chat-form').addEventListener('submit', send);
  $('#chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('#chat-form').requestSubmit(); }
  });
  $('#chat-clear').addEventListener('click', () => { state.chat = []; $('#chat-log').textContent = ''; $('#chat-stats').textContent = ''; });
  $('#join-copy').addEventListener('click', copyJoin);
  follow();
});

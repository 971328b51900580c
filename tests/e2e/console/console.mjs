// console.mjs: the web console in a real browser (Debian's headless
// Chromium, driven by playwright-core) against a real mesh. Run by
// tests/integration/console.sh, which starts the nodes and passes:
//   CONSOLE_URL  A's console (A has an API key and coordinates a 2-stage split)
//   API_KEY      A's key
//   NODES        ids of A, B, C (comma-separated); KILL_PID: C's pid
//   MODEL        the split model's id
//   CLIENT_URL   the console of D, a passive client (no key)
//   ARTIFACTS    directory for screenshots
// Prints ok:/FAIL: lines; exits 1 on any failure. Every wait is bounded.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const env = (k) => { if (!process.env[k]) throw new Error(`${k} is not set`); return process.env[k]; };
const URL_A = env('CONSOLE_URL'), KEY = env('API_KEY'), MODEL = env('MODEL');
const [A, B, C] = env('NODES').split(',');
const KILL_PID = Number(env('KILL_PID'));
const CLIENT_URL = env('CLIENT_URL');
const ART = env('ARTIFACTS');
fs.mkdirSync(ART, { recursive: true });

let fails = 0;
const ok = (what) => console.log('ok: ' + what);
const fail = (what, detail) => { console.log('FAIL: ' + what + (detail ? ` (${detail})` : '')); fails++; };
const check = (what, cond, detail) => (cond ? ok(what) : fail(what, detail));
async function step(what, fn) {
  try { await fn(); ok(what); } catch (e) { fail(what, String(e.message || e).split('\n')[0]); }
}
async function status(url, key) {
  const r = await fetch(url + '/api/status', { headers: key ? { Authorization: 'Bearer ' + key } : {} });
  return r.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
  timeout: 60000,
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: URL_A });
  const page = await ctx.newPage();
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));

  await page.goto(URL_A + '/');
  // A requires a key: the page loads without it, then asks.
  await step('the page asks for the API key', () => page.waitForSelector('#key-form:not([hidden])'));
  await page.fill('#key', KEY);
  await page.click('#key-form button');
  await step('live after the key', () => page.waitForSelector('#live[data-live="yes"]'));

  await step('every node shown: A (this node), B and C alive', async () => {
    await page.waitForSelector(`#nodes tr[data-node="${A}"][data-state="self"]`);
    await page.waitForSelector(`#nodes tr[data-node="${B}"][data-state="alive"]`);
    await page.waitForSelector(`#nodes tr[data-node="${C}"][data-state="alive"]`);
  });
  await step('node ids shown with at least 8 hex digits', async () => {
    const t = await page.textContent(`#nodes tr[data-node="${B}"] td`);
    if (!t.startsWith(B.slice(0, 8))) throw new Error(t);
  });
  await step('a memory bar per node', async () => {
    for (const id of [A, B, C]) await page.waitForSelector(`[data-mem-node="${id}"] .bar`);
  });
  // Links: direct, an RTT, and bytes per second both ways (rates need two
  // documents; the links carry probes all the time).
  await step('each link: direct, its RTT and bytes/s in and out', async () => {
    await page.waitForFunction((ids) => ids.every((id) => {
      const td = [...document.querySelectorAll(`#nodes tr[data-node="${id}"] td`)].map((x) => x.textContent);
      return td[4] === 'direct' && /^\d+\.\d\d ms$/.test(td[5]) && /\d.*B\/s$/.test(td[6]) && /\d.*B\/s$/.test(td[7]);
    }), [B, C], { timeout: 10000 });
  });

  const st = await status(URL_A, KEY);
  const plan = st.plans.find((p) => p.model === MODEL);
  await step('the split model: ready, 2 stages with their layer ranges and nodes', async () => {
    await page.waitForSelector(`[data-plan="${MODEL}"][data-plan-state="ready"]`);
    const rows = await page.$$eval(`[data-plan="${MODEL}"] tr[data-stage]`, (trs) =>
      trs.map((tr) => ({ node: tr.dataset.stageNode, text: tr.textContent })));
    if (rows.length !== 2) throw new Error(`${rows.length} stage rows`);
    plan.stages.forEach((s, i) => {
      if (rows[i].node !== s.node) throw new Error(`stage ${i} on ${rows[i].node}, status says ${s.node}`);
      const want = `[${s.layers[0]}, ${s.layers[1]})`;
      if (!rows[i].text.includes(want)) throw new Error(`stage ${i} shows no ${want}`);
    });
    if (plan.stages[0].node !== A || plan.stages[1].node === A) throw new Error('unexpected placement');
  });

  await step('memory bars: the model\'s part on A (stage 0) and B (stage 1), none on C', async () => {
    for (const id of [A, B])
      await page.waitForSelector(`[data-mem-node="${id}"] .bar span[title^="${MODEL}: "]`, { state: 'attached' });
    const onC = await page.$$(`[data-mem-node="${C}"] .bar span[title^="${MODEL}: "]`);
    if (onC.length) throw new Error('C, a standby, shows the model');
    const serves = await page.textContent(`[data-mem-node="${B}"]`);
    if (!serves.includes(`${MODEL} (stage 1)`)) throw new Error(serves);
  });
  await step('fetch/load progress: each ready stage full', async () => {
    const widths = await page.$$eval(`[data-plan="${MODEL}"] tr[data-stage] .progress span`, (xs) => xs.map((x) => x.style.width));
    if (widths.length !== 2 || widths.some((w) => w !== '100%')) throw new Error(widths.join(' '));
  });
  await step('the join command holds the token', async () => {
    const cmd = await page.textContent('#join-cmd');
    if (cmd !== 'llmesh serve --join ' + st.token) throw new Error(cmd);
  });
  await step('the copy button puts it on the clipboard', async () => {
    await page.click('#join-copy');
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    if (!clip.includes(st.token)) throw new Error(clip);
  });

  // Chat: count how many times the answer's text changes while it streams.
  await step('the chat panel streams an answer, with its speed', async () => {
    await page.waitForSelector(`#chat-model option[value="${MODEL}"]`, { state: 'attached' });
    await page.selectOption('#chat-model', MODEL);
    await page.evaluate(() => {
      window.__changes = 0;
      new MutationObserver(() => {
        const a = document.querySelector('.msg.assistant:last-of-type');
        if (a && a.textContent) window.__changes++;
      }).observe(document.querySelector('#chat-log'), { subtree: true, childList: true, characterData: true });
    });
    await page.fill('#chat-input', 'Who was Moses?');
    await page.click('#chat-send');
    await page.waitForSelector('.msg.assistant[data-done]', { timeout: 60000 });
    const done = await page.getAttribute('.msg.assistant', 'data-done');
    const text = await page.textContent('.msg.assistant');
    const changes = await page.evaluate(() => window.__changes);
    const stats = await page.textContent('#chat-stats');
    if (done !== 'yes') throw new Error(`ended ${done}: ${text}`);
    if (!text.trim()) throw new Error('empty answer');
    if (changes < 2) throw new Error(`the text changed ${changes} time(s): not streamed`);
    if (!/\d+ tokens · \d+(\.\d)? tok\/s/.test(stats)) throw new Error(stats);
    console.log(`  answer of ${text.length} chars in ${changes} updates; ${stats}`);
  });
  // Under the answer: where its time went, from the final chunk's timings
  // (a split answer: both stages' compute and the hops).
  await step('the chat shows the answer\'s stage times and hops', async () => {
    const t = await page.$eval('.msg.assistant + .timings', (box) => ({
      stages: box.dataset.stages,
      rows: [...box.querySelectorAll('tr[data-timing-stage]')].map((tr) => ({
        compute: +tr.dataset.computeMs, wait: +tr.dataset.waitMs, text: tr.textContent })),
      hop: box.querySelector('tr[data-timing-hops]') ? +box.querySelector('tr[data-timing-hops]').dataset.hopMs : NaN,
      bar: box.querySelectorAll('.bar span').length,
    }));
    if (t.stages !== '2' || t.rows.length !== 2) throw new Error(`${t.stages} stages, ${t.rows.length} rows`);
    t.rows.forEach((r, i) => {
      if (!(r.compute > 0)) throw new Error(`stage ${i} compute ${r.compute}`);
      const want = `[${plan.stages[i].layers[0]}, ${plan.stages[i].layers[1]})`;
      if (!r.text.includes(want)) throw new Error(`stage ${i} row without ${want}: ${r.text}`);
    });
    if (!(t.hop >= 0)) throw new Error(`hops ${t.hop}`);
    if (t.bar !== 3) throw new Error(`${t.bar} parts in the bar`);
    console.log(`  answer's times: ${t.rows.map((r, i) => `stage ${i} ${r.compute.toFixed(2)} ms`).join(', ')}, hops ${t.hop.toFixed(2)} ms`);
  });
  // The model panel: each stage's compute time per position, live (over
  // the documents during the answer), and the ring's round trip.
  await step('the model panel shows each stage\'s compute per position and the ring round trip', async () => {
    const rows = await page.$$eval(`[data-plan="${MODEL}"] tr[data-stage]`, (trs) => trs.map((tr) => {
      const c = tr.querySelector('td[data-compute-ms]'), s = tr.querySelector('td[data-send-ms]');
      return { compute: c ? +c.dataset.computeMs : NaN, send: s ? +s.dataset.sendMs : NaN, text: tr.textContent };
    }));
    rows.forEach((r, i) => { if (!(r.compute > 0)) throw new Error(`stage ${i}: compute/pos ${r.compute} (${r.text})`); });
    if (!(rows[1].send >= 0)) throw new Error(`stage 1: send/pos ${rows[1].send}`);
    const ring = await page.getAttribute(`[data-plan="${MODEL}"] [data-ring-ms]`, 'data-ring-ms');
    if (!(+ring > 0)) throw new Error(`ring round trip ${ring}`);
    console.log(`  stages: ${rows.map((r, i) => `${i}: ${r.compute.toFixed(3)} ms/pos`).join(', ')}; ring ${ring} ms`);
  });
  await step('traffic shows the model with its TTFT, lanes and queue depth', async () => {
    await page.waitForSelector(`#traffic tr[data-traffic="${MODEL}"]`);
    const td = await page.$$eval(`#traffic tr[data-traffic="${MODEL}"] td`, (xs) => xs.map((x) => x.textContent));
    if (!/^\d+(\.\d)? ms$/.test(td[3])) throw new Error(`TTFT '${td[3]}'`);
    if (!/^\d+ \/ 4$/.test(td[5])) throw new Error(`lanes '${td[5]}'`);
    if (!/^\d+$/.test(td[6])) throw new Error(`queued '${td[6]}'`);
  });
  // The history graphs: the chat's tokens show as a rise in the tok/s line,
  // drawn from the points the page kept from /api/events.
  const sparkSel = (series) => `#traffic tr[data-traffic-graphs="${MODEL}"] svg.spark[data-series="${series}"]`;
  let historyPoints = 0;
  await step('the traffic graphs show the chat\'s tokens and requests', async () => {
    await page.waitForFunction((sel) => {
      const t = document.querySelector(sel[0]), r = document.querySelector(sel[1]);
      return t && r && +t.dataset.points >= 2 && +t.dataset.max > 0 && +r.dataset.max > 0 &&
        t.querySelector('polyline') && r.querySelector('polyline');
    }, [sparkSel('tok'), sparkSel('req')], { timeout: 20000 });
    historyPoints = +(await page.getAttribute(sparkSel('tok'), 'data-points'));
    console.log(`  history: ${historyPoints} points, tok/s at most ${await page.getAttribute(sparkSel('tok'), 'data-max')}`);
  });
  await page.screenshot({ path: path.join(ART, 'console-desktop.png'), fullPage: true });

  // kill -9 C: the failure detector turns it suspect, then dead, live on the page.
  process.kill(KILL_PID, 'SIGKILL');
  const t0 = Date.now();
  await step('C killed (kill -9) turns dead on the page', () =>
    page.waitForSelector(`#nodes tr[data-node="${C}"][data-state="dead"]`, { timeout: 45000 }));
  console.log(`  dead on the page ${((Date.now() - t0) / 1000).toFixed(1)} s after the kill`);
  await page.screenshot({ path: path.join(ART, 'console-node-dead.png'), fullPage: true });
  await step('the history grew meanwhile (one point per document)', async () => {
    const n = +(await page.getAttribute(sparkSel('tok'), 'data-points'));
    if (!(n > historyPoints)) throw new Error(`${n} points, ${historyPoints} before`);
  });
  // The node keeps its own history (a point per 5 s): wait until it holds
  // the chat's tokens, so that the fresh page below must draw them at once.
  let nodeHistory = null;
  await step('A\'s /api/history holds the chat\'s tokens', async () => {
    for (let i = 0; i < 30; i++) {
      const r = await fetch(URL_A + '/api/history', { headers: { Authorization: 'Bearer ' + KEY } });
      const h = await r.json();
      const m = (h.models || []).find((x) => x.model === MODEL);
      if (m && m.tok_s.some((x) => x > 0) && m.req_s.some((x) => x > 0)) { nodeHistory = { h, m }; return; }
      await new Promise((res) => setTimeout(res, 500));
    }
    throw new Error('no point with tokens within 15 s');
  });
  check('no script errors on the page', errors.length === 0, errors.join('; '));

  // A phone: one column, nothing wider than the screen.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true,
    deviceScaleFactor: 2 });
  const pp = await phone.newPage();
  pp.setDefaultTimeout(20000);
  await pp.goto(URL_A + '/');
  await pp.fill('#key', KEY);
  await pp.click('#key-form button');
  await step('phone: live, every node listed', async () => {
    await pp.waitForSelector('#live[data-live="yes"]');
    for (const id of [A, B, C]) await pp.waitForSelector(`#nodes tr[data-node="${id}"]`, { state: 'attached' });
  });
  // A page opened now draws the recent past from the node's history, with no
  // new request and before it could have two documents of its own.
  await step('a fresh page: the traffic graphs hold the node\'s points at once', async () => {
    const t0 = Date.now();
    await pp.waitForFunction((sel) => {
      const t = document.querySelector(sel[0]), r = document.querySelector(sel[1]);
      return t && r && +t.dataset.nodePoints >= 2 && +t.dataset.max > 0 && +r.dataset.max > 0 &&
        t.querySelector('polyline') !== null;
    }, [sparkSel('tok'), sparkSel('req')], { timeout: 5000 });
    const got = await pp.$eval(sparkSel('tok'), (g) => ({ node: +g.dataset.nodePoints, all: +g.dataset.points }));
    const had = nodeHistory.m.tok_s.filter((x) => x !== null).length;
    if (got.node < had) throw new Error(`${got.node} points from the node, which had ${had} a moment before`);
    console.log(`  fresh page: ${got.node} points from the node (${got.all} in all) after ${Date.now() - t0} ms`);
  });
  await step('phone: the page is no wider than the screen', async () => {
    const w = await pp.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    if (w[0] > w[1] + 1) throw new Error(`scrollWidth ${w[0]} > ${w[1]}`);
  });
  await pp.screenshot({ path: path.join(ART, 'console-phone.png'), fullPage: true });
  await phone.close();

  // The passive client's console: no key there; it shows the mesh from its
  // routing table and has no token to give.
  const cp = await ctx.newPage();
  cp.setDefaultTimeout(20000);
  await cp.goto(CLIENT_URL + '/');
  await step('client console: live without a key, shows A and B, no token', async () => {
    await cp.waitForSelector('#live[data-live="yes"]');
    await cp.waitForSelector(`#nodes tr[data-node="${A}"]`);
    await cp.waitForSelector(`#nodes tr[data-node="${B}"]`);
    const t = await cp.textContent('#join-cmd');
    if (!t.includes('client')) throw new Error(t);
  });
  await cp.screenshot({ path: path.join(ART, 'console-client.png'), fullPage: true });
} finally {
  await browser.close();
}
console.log(`browser: ${fails} failed`);
process.exit(fails ? 1 : 0);

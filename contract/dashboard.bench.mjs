// The dashboard's browser budgets, measured in Debian's headless Chromium (puppeteer-core)
// against a running `pop serve` (bench/dashboard.sh starts one and runs this):
//
// - a 500-operation DAG rendered: from navigating to the agenda's page to the frame after
//   all 500 nodes are drawn (the SVG's nodes in the DOM; above 200 operations, the canvas's
//   first frame), RUNS times (the page is reloaded each run);
// - 200 updates/s into the open agenda page: operation reports (updateAgendaProgress, one
//   operation's percentComplete each) paced at UPDATE_RATE for UPDATE_SECONDS, while the page
//   records the interval between animation frames and every long task; the slowest frame is
//   the figure (budget: none slower than 100 ms);
// - the first page of the agenda list as the page sees it (fetch to data), RUNS times.
//
// Environment: POP_BASE, POP_ADMIN (an admin token), POP_CHROMIUM, RUNS (5), UPDATE_RATE
// (200), UPDATE_SECONDS (10), OPS (500), INFLIGHT (16: reports in flight at most), PROFILE
// (1: the page's CPU profile while updates stream in), TRACE (a file: a Chrome trace of them).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const BASE = process.env.POP_BASE;
const ADMIN = process.env.POP_ADMIN;
const RUNS = Number(process.env.RUNS || 5);
const RATE = Number(process.env.UPDATE_RATE || 200);
const SECONDS = Number(process.env.UPDATE_SECONDS || 10);
const OPS = Number(process.env.OPS || 500);
const INFLIGHT = Number(process.env.INFLIGHT || 16);

async function gql(query, variables = {}) {
  const res = await fetch(BASE + '/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + ADMIN },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Config and a 500-operation agenda: 20 chains of 25 operations (each waits for the one
// before it in its chain, through a reference).
await gql('mutation { createResourcePool(resourcePool: {id: "bench-pool", customerId: "ops", title: "Pool"}) { position } }');
await gql('mutation { createCustomer(customer: {id: "bench", title: "Bench", resourcePoolId: "bench-pool"}) { position } }');
await gql('mutation { createInsight(insight: {id: "bench-insight", customerId: "ops", title: "Bench", resourcePoolId: "bench-pool", queueSize: 10, isGlobal: true, mappers: {operationType: ["bench"]}}) { position } }');
const chains = 20;
const operations = [];
for (let i = 0; i < OPS; i++) {
  const chain = i % chains;
  const stage = Math.floor(i / chains);
  const name = `s${stage}-c${chain}`;
  const payload = stage === 0 ? { src: `in-${chain}` } : { in: `@<s${stage - 1}-c${chain}.out>` };
  operations.push({ name, type: 'bench', payload });
}
const submitted = await gql('mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id progressId customerId } } }', {
  a: { customerId: 'bench', title: `${OPS} operations`, operations },
});
const agenda = submitted.submitAgenda.agenda;
let lease = null;
for (let i = 0; i < 200 && !lease; i++) {
  const d = await gql('mutation { getAgenda(insightId: "bench-insight", count: 1) { agenda { id } lease { id } } }');
  if (d.getAgenda.length) lease = d.getAgenda[0].lease.id;
  else await sleep(100);
}
if (!lease) throw new Error('the scheduler did not queue the bench agenda');
const report = (op, pct) =>
  gql('mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: { id: agenda.progressId, processingState: 'EXECUTING', operationProgress: [{ operation: op, processingState: 'EXECUTING', percentComplete: pct }] },
    l: lease,
  });
await report(operations[0].name, 1);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pop-chromium-bench-'));
const browser = await puppeteer.launch({
  executablePath: process.env.POP_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-sync', '--disable-component-update', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(BASE + '/#token=' + encodeURIComponent(ADMIN));
  await page.waitForSelector('#who');
  const url = `${BASE}/#/agenda/${encodeURIComponent(agenda.customerId)}/${encodeURIComponent(agenda.id)}`;

  // 1. The DAG render.
  const renders = [];
  for (let run = 0; run < RUNS; run++) {
    await page.goto(BASE + '/#/overview');
    await page.waitForSelector('#state-counts');
    const t0 = Date.now();
    await page.evaluate((u) => (location.href = u), url);
    // Drawn: every node in the SVG (up to 200 operations), or the canvas's first frame drawn
    // with every node laid out (above).
    await page.waitForFunction(
      (n) => {
        const w = document.querySelector('.dag-wrap');
        return document.querySelectorAll('svg.dag g.node').length === n || (w && w.dataset.nodes === String(n) && Number(w.dataset.drawn || 0) > 0);
      },
      { timeout: 60000, polling: 'raf' },
      OPS,
    );
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    renders.push(Date.now() - t0);
  }
  const layout = await page.$eval('.dag-wrap', (e) => e.dataset.layout);
  console.log(`dag: ${OPS} operations (${layout} layout), navigation to painted: median ${median(renders)} ms; runs ${renders.join(' / ')} ms`);

  // 2. 200 updates/s into the open page.
  await page.evaluate(() => {
    window.__frames = [];
    window.__long = [];
    let last = performance.now();
    const tick = (t) => {
      window.__frames.push(t - last);
      last = t;
      if (!window.__stopFrames) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    try {
      new PerformanceObserver((list) => list.getEntries().forEach((e) => window.__long.push(e.duration))).observe({ type: 'longtask' });
    } catch (e) {
      /* no longtask support */
    }
  });
  // First 3 s with no updates: what frames look like on this machine with the page idle.
  await sleep(3000);
  const idle = await page.evaluate(() => {
    const f = window.__frames.slice(1);
    window.__frames = [];
    window.__long = [];
    return f;
  });
  console.log(`idle: ${idle.length} frames in 3 s, median ${median(idle).toFixed(1)} ms, slowest ${Math.max(...idle).toFixed(1)} ms`);
  const before = await page.evaluate(() => (window.__popStats ? window.__popStats.operationUpdates : 0));
  let cdp = null;
  if (process.env.PROFILE) {
    cdp = await page.target().createCDPSession();
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.start');
  }
  // TRACE=<file>: a Chrome trace of the updates (chrome://tracing, or Perfetto) to see what a
  // slow frame was made of.
  if (process.env.TRACE) {
    await page.tracing.start({
      path: process.env.TRACE,
      categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'disabled-by-default-devtools.timeline.frame', 'v8', 'blink', 'cc', 'gpu', 'viz', 'toplevel'],
    });
  }
  const total = RATE * SECONDS;
  const started = Date.now();
  let sent = 0;
  // Reports of one agenda are appended to one stream: several in flight at once (as a worker
  // with parallel operations sends them, up to INFLIGHT); the server queues them per stream.
  // One refused as CONFLICT (it should not happen in one process) is counted, not retried.
  const inflight = new Set();
  let conflicts = 0;
  while (sent < total) {
    const due = started + (sent * 1000) / RATE;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    const op = operations[sent % OPS].name;
    const p = report(op, 1 + (sent % 99))
      .catch((e) => {
        if (/CONFLICT/.test(String(e))) conflicts++;
        else throw e;
      })
      .finally(() => inflight.delete(p));
    inflight.add(p);
    sent++;
    if (inflight.size >= INFLIGHT) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  const sendSeconds = (Date.now() - started) / 1000;
  if (process.env.TRACE) await page.tracing.stop();
  if (cdp) {
    const { profile } = await cdp.send('Profiler.stop');
    const self = new Map();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const dt = profile.timeDeltas;
    profile.samples.forEach((id, i) => {
      const n = byId.get(id);
      const k = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`;
      self.set(k, (self.get(k) || 0) + (dt[i] || 0) / 1000);
    });
    console.log([...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `${v.toFixed(0)} ms ${k}`).join('\n'));
  }
  await sleep(1000);
  const stats = await page.evaluate(() => {
    window.__stopFrames = true;
    return {
      frames: window.__frames.slice(1),
      long: window.__long,
      applied: window.__popStats ? window.__popStats.operationUpdates : 0,
    };
  });
  const frames = stats.frames;
  const slowest = Math.max(...frames);
  const over100 = frames.filter((f) => f > 100).length;
  console.log(
    `updates: ${sent} reports in ${sendSeconds.toFixed(1)} s (${(sent / sendSeconds).toFixed(0)}/s, ${conflicts} refused as CONFLICT); ` +
      `page applied ${stats.applied - before} operation updates; ${frames.length} frames, ` +
      `median ${median(frames).toFixed(1)} ms, slowest ${slowest.toFixed(1)} ms, ${over100} over 100 ms; ` +
      `long tasks: ${stats.long.length}${stats.long.length ? ', longest ' + Math.max(...stats.long).toFixed(0) + ' ms' : ''}`,
  );

  // 3. The list's first page as the page fetches it.
  const pages = [];
  for (let run = 0; run < RUNS; run++) {
    await page.goto(BASE + '/#/overview');
    await page.waitForSelector('#state-counts');
    await page.evaluate(() => (window.__popFirstPageMs = undefined));
    await page.evaluate(() => (location.hash = '#/agendas'));
    await page.waitForFunction(() => window.__popFirstPageMs !== undefined, { timeout: 60000 });
    pages.push(await page.evaluate(() => window.__popFirstPageMs));
  }
  console.log(`list: first page (fetch to data) median ${median(pages).toFixed(1)} ms; runs ${pages.map((p) => p.toFixed(1)).join(' / ')} ms`);
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}

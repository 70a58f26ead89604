// The dashboard in a real headless Chromium (Debian's, at POP_CHROMIUM; never a downloaded
// build), driven by puppeteer-core against a real `pop serve` (scheduler on) that
// server/tests/dashboard.rs started. Agendas are submitted, claimed and reported over the
// public GraphQL API from here, as a client and a worker would; the page must follow them
// live, without a reload.
//
// Environment: POP_BASE (http://host:port), POP_ADMIN, POP_ACME (user of acme), POP_GLOBEX
// (user of globex), POP_ACME_SERVICE (worker of acme), POP_CHROMIUM, POP_SCREENSHOTS (a
// directory to save screenshots in; optional).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const BASE = process.env.POP_BASE;
const T = {
  admin: process.env.POP_ADMIN,
  acme: process.env.POP_ACME,
  globex: process.env.POP_GLOBEX,
  acmeService: process.env.POP_ACME_SERVICE,
};
const SHOTS = process.env.POP_SCREENSHOTS || '';
const WAIT = 20000;
const ORIGIN = new URL(BASE).origin;

let browser;
let profile;
/// Every console error, page error and off-host request, from every page.
const problems = [];
const offHost = [];

async function gql(token, query, variables = {}) {
  const res = await fetch(BASE + '/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

const SUBMIT = 'mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id progressId customerId } position } }';

function threeOps(customerId, linkId, title = 'transcode') {
  return {
    customerId,
    linkId,
    title,
    operations: [
      { name: 'probe', type: 'ffmpeg', payload: { src: 'in.mp4' } },
      { name: 'encode', type: 'ffmpeg', payload: '@<probe.out::/streams>' },
      { name: 'package', type: 'ffmpeg', payload: {}, params: { dependsOn: 'encode' } },
    ],
  };
}

async function submit(token, agenda) {
  const d = await gql(token, SUBMIT, { a: agenda });
  return d.submitAgenda.agenda;
}

/// The worker side: waits for the scheduler to queue agenda `id` and claims it as acme's
/// worker; its lease id.
async function claim(id) {
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    const d = await gql(T.acmeService, 'mutation { getAgenda(insightId: "transcode", count: 10) { agenda { id } lease { id } } }');
    const mine = d.getAgenda.find((r) => r.agenda.id === id);
    if (mine) return mine.lease.id;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`the scheduler never queued agenda ${id} for the worker to claim`);
}

/// A fresh tab in its own browser context (its own sessionStorage), recording problems. `answer(request)`: a test's own answer to a request
/// of this server (true when it answered it).
async function newPage(answer = () => false) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1280, height: 860 });
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()} (${page.url()})`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message} (${page.url()})`));
  page.on('requestfailed', (r) => {
    if (r.url().startsWith(ORIGIN)) problems.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`);
  });
  // Offline: nothing may leave this server's origin.
  await page.setRequestInterception(true);
  page.on('request', (r) => {
    const u = r.url();
    if (u.startsWith(ORIGIN) && answer(r)) return;
    if (u.startsWith(ORIGIN) || u.startsWith('data:') || u.startsWith('ws://' + new URL(BASE).host)) {
      r.continue();
    } else {
      offHost.push(u);
      r.abort();
    }
  });
  return page;
}

/// Follows a sign-in link (`#token=…`) in a tab signed in with none: it names whom the link
/// signs in as, and signs in once accepted.
async function followSignInLink(page, token) {
  await page.goto(BASE + '/#token=' + encodeURIComponent(token), { waitUntil: 'load' });
  await page.waitForSelector('#offer-accept', { timeout: WAIT });
  await page.click('#offer-accept');
  await page.waitForSelector('#who', { timeout: WAIT });
}

async function signIn(page, token) {
  await page.goto(BASE + '/', { waitUntil: 'load' });
  await page.waitForSelector('#token', { timeout: WAIT });
  await page.type('#token', token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#who', { timeout: WAIT });
}

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await new Promise((r) => setTimeout(r, 300));
  await page.screenshot({ path: path.join(SHOTS, name + '.png') });
}

const rowSel = (id) => `#agenda-list tr[data-agenda="${id}"]`;

before(async () => {
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pop-chromium-'));
  browser = await puppeteer.launch({
    executablePath: process.env.POP_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    userDataDir: profile,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-sync',
      '--disable-component-update',
      '--disable-default-apps',
      '--no-first-run',
      '--no-default-browser-check',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

let acmePage;
let live; // the agenda submitted while the list was open

test('sign in with a token shows who is signed in; a bad token is refused', async () => {
  const bad = await newPage();
  await bad.goto(BASE + '/');
  await bad.waitForSelector('#token');
  // The hint names the token file as it reads (it showed the escape `&lt;data-dir&gt;`).
  const hint = await bad.$eval('main p.muted', (e) => e.textContent);
  assert.match(hint, /<data-dir>\/admin\.token/);
  await bad.type('#token', 'not-a-token');
  await bad.click('#signin button[type=submit]');
  await bad.waitForSelector('.error', { timeout: WAIT });
  const text = await bad.$eval('.error', (e) => e.textContent);
  assert.match(text, /UNAUTHENTICATED/);
  // Never accepted, so not "revoked" (dash12).
  assert.match(text, /does not accept this token: check that it was pasted whole/);
  assert.doesNotMatch(text, /revoked/);
  await bad.browserContext().close();
  // That refusal was a 401 the browser logs as a failed resource: expected, not a problem.
  problems.splice(0, problems.length, ...problems.filter((p) => !/401/.test(p)));

  acmePage = await newPage();
  await signIn(acmePage, T.acme);
  const who = await acmePage.$eval('#who', (e) => e.textContent);
  assert.match(who, /acme-user/);
  // Focus goes to the page signed into, as after every page change (dash58 L4).
  await acmePage.waitForFunction(() => document.activeElement && document.activeElement.id === 'main', { timeout: WAIT });
});

test('an agenda submitted over the API appears in the list without a reload', async () => {
  await acmePage.goto(BASE + '/#/agendas');
  await acmePage.waitForSelector('#agenda-list', { timeout: WAIT });
  await acmePage.evaluate(() => (window.__notReloaded = true));
  live = await submit(T.acme, threeOps('acme', 'batch-live'));
  await acmePage.waitForSelector(rowSel(live.id), { timeout: WAIT });
  assert.equal(await acmePage.evaluate(() => window.__notReloaded), true, 'the page was not reloaded');
  // Newest first: the new agenda is the top row.
  const first = await acmePage.$eval('#agenda-list tbody tr', (r) => r.dataset.agenda);
  assert.equal(first, live.id);
  await shot(acmePage, 'agendas');
});

test('the agenda page shows every operation in the DAG, including those not started', async () => {
  await acmePage.click(rowSel(live.id) + ' a');
  await acmePage.waitForSelector('svg.dag g.node', { timeout: WAIT });
  // Drawn 'loading' until the operations' progress is read (dash55 L1), then by state.
  await acmePage.waitForFunction(() => !document.querySelector('svg.dag g.node[data-state="loading"]'), { timeout: WAIT });
  const nodes = await acmePage.$$eval('svg.dag g.node', (gs) => gs.map((g) => [g.dataset.op, g.dataset.state]));
  assert.deepEqual(nodes.map((n) => n[0]).sort(), ['encode', 'package', 'probe']);
  const edges = await acmePage.$$eval('svg.dag path.edge', (ps) => ps.length);
  assert.equal(edges, 2, 'probe → encode (reference) and encode → package (dependsOn)');
  // Nothing has started: every node is drawn, none with a state from a report.
  for (const [op, state] of nodes) assert.ok(['unstarted', 'waiting'].includes(state), `${op} is ${state}`);
});

test('reports move the bars live', async () => {
  // The worker side: wait for the scheduler to queue the agenda, claim it, report.
  const lease = await claim(live.id);
  const report = (pct) =>
    gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
      p: {
        id: live.progressId,
        processingState: 'EXECUTING',
        operationProgress: [{ operation: 'probe', processingState: 'EXECUTING', percentComplete: pct, processingStateMessage: `probing ${pct}%` }],
      },
      l: lease,
    });
  const bar = 'svg.dag g.node[data-op="probe"] rect.bar';
  await report(40);
  await acmePage.waitForFunction((sel) => document.querySelector(sel) && document.querySelector(sel).dataset.pct === '40', { timeout: WAIT }, bar);
  await report(80);
  await acmePage.waitForFunction((sel) => document.querySelector(sel) && document.querySelector(sel).dataset.pct === '80', { timeout: WAIT }, bar);
  const state = await acmePage.$eval('svg.dag g.node[data-op="probe"]', (g) => g.dataset.state);
  assert.equal(state, 'executing');
  // The agenda's bar is a progress bar to assistive technology (dash12: an empty cell).
  await acmePage.waitForFunction(() => {
    const bar = document.querySelector('p.meta .pbar');
    return bar && bar.getAttribute('role') === 'progressbar' && Number(bar.getAttribute('aria-valuenow')) > 0;
  }, { timeout: WAIT });
  const others = await acmePage.$$eval('svg.dag g.node:not([data-op="probe"])', (gs) => gs.map((g) => g.dataset.state));
  assert.equal(others.length, 2);
  for (const s of others) assert.ok(['unstarted', 'waiting'].includes(s), `encode and package have not started: ${others}`);
  await shot(acmePage, 'agenda');
});

test('cancel from the page asks first, then changes the state', async () => {
  // Asked, and kept: nothing is cancelled.
  await acmePage.click('#cancel-agenda');
  await acmePage.waitForSelector('#cancel-confirm-box', { timeout: WAIT });
  await acmePage.click('#cancel-keep');
  await acmePage.waitForSelector('#cancel-agenda', { timeout: WAIT });
  const kept = await gql(T.acme, 'query($id: String!) { agendaProgress(id: $id) { processingState } }', { id: live.progressId });
  assert.notEqual(kept.agendaProgress.processingState, 'COMPLETE');
  // By keyboard: the question takes focus on its safe answer, Escape closes it and gives
  // focus back to the button (dash12: focus fell to the page; Tab skipped the answers).
  await acmePage.focus('#cancel-agenda');
  await acmePage.keyboard.press('Enter');
  await acmePage.waitForSelector('#cancel-confirm-box', { timeout: WAIT });
  await acmePage.waitForFunction(() => document.activeElement && document.activeElement.id === 'cancel-keep', { timeout: WAIT });
  await acmePage.keyboard.down('Shift');
  await acmePage.keyboard.press('Tab');
  await acmePage.keyboard.up('Shift');
  assert.equal(await acmePage.evaluate(() => document.activeElement.id), 'cancel-confirm');
  await acmePage.keyboard.press('Escape');
  await acmePage.waitForFunction(() => !document.querySelector('#cancel-confirm-box') && document.activeElement && document.activeElement.id === 'cancel-agenda', { timeout: WAIT });
  // Asked, and confirmed.
  await acmePage.click('#cancel-agenda');
  await acmePage.waitForSelector('#cancel-confirm', { timeout: WAIT });
  await acmePage.click('#cancel-confirm');
  await acmePage.waitForSelector('h1 .badge[data-state="cancelled"]', { timeout: WAIT });
  const d = await gql(T.acme, 'query($id: String!) { agendaProgress(id: $id) { processingState processingStateMessage } }', { id: live.progressId });
  assert.equal(d.agendaProgress.processingState, 'COMPLETE');
  assert.equal(d.agendaProgress.processingStateMessage, 'cancelled');
  // The history has the cancellation, and "failures only" keeps it.
  await acmePage.waitForFunction(() => [...document.querySelectorAll('#timeline tr[data-type]')].some((r) => /ancel/.test(r.dataset.type)), { timeout: WAIT });
  // Each event's time reads whole (it was cut to "2026-12-04 1…").
  const cut = await acmePage.$eval('#timeline tr[data-type] td', (td) => [td.textContent, td.scrollWidth, td.clientWidth]);
  assert.ok(cut[1] <= cut[2], `the time cell is cut: ${cut}`);
  assert.match(cut[0], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
  await acmePage.click('#failures-only');
  const types = await acmePage.$$eval('#timeline tr[data-type]', (rs) => rs.map((r) => r.dataset.type));
  assert.ok(types.length >= 1 && types.every((t) => /ancel|fail|time|reap|reclaim|reject|error/i.test(t)), `failures only: ${types}`);
  // By type (dash8: every option's value was empty, so a type chosen showed every event).
  await acmePage.click('#failures-only');
  await acmePage.select('#event-type', 'AgendaSubmitted');
  await acmePage.waitForFunction(() => [...document.querySelectorAll('#timeline tr[data-type]')].every((r) => r.dataset.type === 'AgendaSubmitted'), { timeout: WAIT });
  assert.equal((await acmePage.$$('#timeline tr[data-type]')).length, 1);
  await acmePage.select('#event-type', '');
});

test('filters narrow the list', async () => {
  const a = await submit(T.acme, threeOps('acme', 'batch-a'));
  const b = await submit(T.acme, threeOps('acme', 'batch-b'));
  await acmePage.goto(BASE + '/#/agendas');
  await acmePage.waitForSelector(rowSel(b.id), { timeout: WAIT });
  const all = await acmePage.$$eval('#agenda-list tbody tr', (rs) => rs.map((r) => r.dataset.agenda));
  assert.ok(all.includes(a.id) && all.includes(b.id) && all.includes(live.id));
  const input = await acmePage.$('input[name="linkId"]');
  await input.type('batch-a');
  await input.press('Enter');
  await acmePage.evaluate(() => document.querySelector('input[name="linkId"]').blur());
  // b gone and the page of the new filter shown (not the blank list while it loads).
  await acmePage.waitForFunction(
    (bid) => !document.querySelector(`#agenda-list tr[data-agenda="${bid}"]`)
      && document.querySelector('#agenda-list[data-loading="false"]'),
    { timeout: WAIT },
    b.id,
  );
  const narrowed = await acmePage.$$eval('#agenda-list tbody tr', (rs) => rs.map((r) => r.dataset.agenda));
  assert.deepEqual(narrowed, [a.id]);
  // By state: the cancelled one alone is COMPLETE.
  await acmePage.goto(BASE + '/#/agendas?state=COMPLETE');
  await acmePage.waitForSelector(rowSel(live.id), { timeout: WAIT });
  await acmePage.waitForSelector('#agenda-list[data-loading="false"]', { timeout: WAIT });
  const complete = await acmePage.$$eval('#agenda-list tbody tr', (rs) => rs.map((r) => r.dataset.agenda));
  assert.deepEqual(complete, [live.id]);
  // The state picked in the form: the select names it, and the list follows it.
  assert.equal(await acmePage.$eval('select[name="state"]', (s) => s.value), 'COMPLETE');
  await acmePage.select('select[name="state"]', 'WAITING');
  await acmePage.waitForFunction(() => /state=WAITING/.test(location.hash), { timeout: WAIT });
  await acmePage.waitForFunction(
    (lid) => !document.querySelector(`#agenda-list tr[data-agenda="${lid}"]`)
      && document.querySelector('#agenda-list[data-loading="false"]'),
    { timeout: WAIT },
    live.id,
  );
  const waiting = await acmePage.$$eval('#agenda-list tbody tr', (rs) => rs.map((r) => r.dataset.agenda));
  assert.ok(waiting.includes(a.id) && waiting.includes(b.id), `waiting: ${waiting}`);
  assert.equal(await acmePage.$eval('select[name="state"]', (s) => s.value), 'WAITING');
  // Live: an agenda that leaves the state filtered on goes, and one that enters it again below
  // the page's top row (a rerun) comes back (dash8: a rerun never showed under WAITING, and
  // finished agendas stayed under EXECUTING).
  await gql(T.acme, 'mutation($id: String!) { cancelAgenda(agendaId: $id) { position } }', { id: a.id });
  await acmePage.waitForFunction((aid) => !document.querySelector(`#agenda-list tr[data-agenda="${aid}"]`), { timeout: WAIT }, a.id);
  await gql(T.acme, 'mutation($id: String!) { rerunAgenda(agendaId: $id) { position } }', { id: a.id });
  await acmePage.waitForSelector(rowSel(a.id), { timeout: WAIT });
  const again = await acmePage.$$eval('#agenda-list tbody tr', (rs) => rs.map((r) => r.dataset.agenda));
  assert.deepEqual(again.filter((id) => id === a.id || id === b.id), [b.id, a.id], 'newest first');
});

test("a tenant's page never shows another tenant's agenda, not even in counts", async () => {
  const g = await submit(T.globex, threeOps('globex', 'batch-g', 'globex job'));
  const page = await newPage();
  await signIn(page, T.globex);
  await page.goto(BASE + '/#/agendas');
  await page.waitForSelector(rowSel(g.id), { timeout: WAIT });
  const rows = await page.$$eval('#agenda-list tbody tr', (rs) => rs.map((r) => r.dataset.customer));
  assert.deepEqual(rows, ['globex']);
  // The overview counts only globex's one agenda; acme has three.
  await page.goto(BASE + '/#/overview');
  await page.waitForSelector('#state-counts', { timeout: WAIT });
  const counts = await page.$$eval('#state-counts .card', (cs) => Object.fromEntries(cs.map((c) => [c.dataset.state, Number(c.querySelector('.n').textContent)])));
  assert.deepEqual(counts, { waiting: 1, executing: 0, succeeded: 0, failed: 0, cancelled: 0 });
  // Acme's agenda by its address: not found, nothing of it drawn.
  await page.goto(BASE + `/#/agenda/acme/${encodeURIComponent(live.id)}`);
  await page.waitForSelector('.error', { timeout: WAIT });
  assert.match(await page.$eval('.error', (e) => e.textContent), /NOT_FOUND|not visible|no agenda/i);
  assert.equal(await page.$('svg.dag'), null);
  // Acme's batch: an empty summary, said as for a linkId nobody uses.
  await page.goto(BASE + '/#/batch/batch-a');
  await page.waitForSelector('#batch-summary', { timeout: WAIT });
  assert.match(await page.$eval('#batch-summary', (e) => e.textContent), /no agenda you may see carries this linkId/);
  await page.browserContext().close();
});

test('the admin overview counts every tenant and draws the per-minute chart', async () => {
  const page = await newPage();
  await followSignInLink(page, T.admin);
  await page.waitForSelector('#state-counts', { timeout: WAIT });
  assert.equal(await page.evaluate(() => location.hash), '#/', 'the token left the address bar');
  const counts = await page.$$eval('#state-counts .card', (cs) => Object.fromEntries(cs.map((c) => [c.dataset.state, Number(c.querySelector('.n').textContent)])));
  assert.equal(counts.cancelled, 1);
  assert.equal(counts.waiting + counts.executing, 3, 'batch-a, batch-b (acme) and batch-g (globex)');
  await page.waitForSelector('#per-minute canvas', { timeout: WAIT });
  // The chart's hour ends at its read, not at the last minute with an agenda (dash12).
  const until = Date.parse(await page.$eval('#per-minute', (e) => e.dataset.until));
  assert.ok(Math.abs(Date.now() - until) < 120000, `the chart ends at ${new Date(until).toISOString()}`);
  await page.waitForSelector('#insight-table tr[data-insight="transcode"]', { timeout: WAIT });
  await shot(page, 'overview');
  acmePage.adminPage = page;
});

test('GraphiQL loads offline, signed in with the dashboard token', async () => {
  const page = acmePage.adminPage;
  await page.goto(BASE + '/graphql');
  await page.waitForSelector('.graphiql-container', { timeout: WAIT });
  await page.waitForSelector('.graphiql-execute-button', { timeout: WAIT });
  await page.click('.graphiql-execute-button');
  await page.waitForFunction(() => /"role": "admin"/.test(document.querySelector('.result-window') ? document.querySelector('.result-window').textContent : ''), { timeout: WAIT });
  // The schema loaded (introspection with the token): the docs explorer lists the query type.
  await page.click('.graphiql-sidebar button[aria-label*="Documentation"]');
  await page.waitForFunction(() => /QueryRoot|Query/.test(document.querySelector('.graphiql-doc-explorer') ? document.querySelector('.graphiql-doc-explorer').textContent : ''), { timeout: WAIT });
  await shot(page, 'graphiql');
  await page.browserContext().close();
});

test('GraphiQL without a session asks for a token without a refused request, and keeps none it was given', async () => {
  const page = await newPage();
  const refused = [];
  page.on('response', (r) => { if (r.status() === 401) refused.push(r.url()); });
  await page.goto(BASE + '/graphql');
  await page.waitForSelector('.graphiql-execute-button', { timeout: WAIT });
  // The schema's load had no token: said in the page, no 401 (dash58 L5). (A click while
  // GraphiQL still sets up is not taken: clicked again until the answer shows.)
  const run = async (pattern) => {
    const deadline = Date.now() + WAIT;
    for (;;) {
      await page.click('.graphiql-execute-button');
      try {
        await page.waitForFunction((p) => new RegExp(p).test(document.querySelector('.result-window') ? document.querySelector('.result-window').textContent : ''), { timeout: 2000 }, pattern);
        return;
      } catch (e) {
        if (Date.now() > deadline) throw e;
      }
    }
  };
  await run('no token: sign in');
  assert.deepEqual(refused, [], 'no request the server refused');
  // A token typed into the headers pane runs the query, and is kept nowhere: not in
  // localStorage, nor in what GraphiQL keeps of its history (dash58 M1).
  for (const tab of await page.$$('.graphiql-editor-tools button')) {
    if (/Headers/i.test(await tab.evaluate((e) => e.textContent))) await tab.click();
  }
  await page.waitForFunction(() => [...document.querySelectorAll('.graphiql-editor-tool .CodeMirror')].some((e) => e.CodeMirror && /Authorization/.test(e.CodeMirror.getValue())), { timeout: WAIT });
  const set = await page.evaluate((tok) => {
    const tools = [...document.querySelectorAll('.graphiql-editor-tool .CodeMirror')].map((e) => e.CodeMirror).filter(Boolean);
    const headers = tools.find((cm) => /Authorization/.test(cm.getValue()));
    const eds = [...document.querySelectorAll('.graphiql-query-editor .CodeMirror')].map((e) => e.CodeMirror).filter(Boolean);
    const query = eds.find((cm) => /me \{/.test(cm.getValue()));
    if (!headers || !query) return false;
    headers.setValue('{"Authorization": "Bearer ' + tok + '"}');
    query.setValue('{ me { name role } }');
    return true;
  }, T.globex);
  assert.ok(set, 'the headers and query editors');
  await run('"role": "user"');
  // GraphiQL keeps the query in its history (a moment after the answer).
  await page.waitForFunction(() => /me \{ name role \}/.test(JSON.stringify(localStorage) + JSON.stringify(sessionStorage)), { timeout: WAIT });
  const before = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage));
  assert.ok(!before.includes(T.globex), 'the history keeps no token');
  // And the tab (a moment after its edit).
  await page.waitForFunction(() => /me \{ name role \}/.test(sessionStorage.getItem('graphiql:tabState') || ''), { timeout: WAIT });
  await page.reload();
  await page.waitForSelector('.graphiql-execute-button', { timeout: WAIT });
  const kept = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage));
  assert.ok(!kept.includes(T.globex), 'the token is kept nowhere');
  const history = await page.evaluate(() => sessionStorage.getItem('graphiql:queries') || '');
  assert.ok(/me \{ name role \}/.test(history), `the history is kept (without headers): ${history.slice(0, 300)}`);
  // Its tab too, as GraphiQL keeps it: the query run is back after the reload, not the default
  // one (review58 M2: rewritten, the saved tabs were dropped at a reload).
  await page.waitForFunction(() => [...document.querySelectorAll('.graphiql-query-editor .CodeMirror')].some((e) => e.CodeMirror && /me \{ name role \}/.test(e.CodeMirror.getValue())), { timeout: WAIT });
  await page.browserContext().close();
});

test('the list is newest first, oldest first on request', async () => {
  const older = await submit(T.acme, threeOps('acme', 'batch-order-1'));
  await new Promise((r) => setTimeout(r, 5)); // distinct addedTimes
  const newer = await submit(T.acme, threeOps('acme', 'batch-order-2'));
  await acmePage.goto(BASE + '/#/agendas');
  await acmePage.waitForSelector(rowSel(newer.id), { timeout: WAIT });
  // The list shows only the page fetched for the current filter (never the previous filter's
  // page with live rows merged into it).
  await acmePage.waitForSelector('#agenda-list[data-loading="false"]', { timeout: WAIT });
  const ids = () => acmePage.$$eval('#agenda-list tbody tr', (rs) => rs.map((r) => r.dataset.agenda));
  const newest = await ids();
  assert.deepEqual(newest.slice(0, 2), [newer.id, older.id]);
  await acmePage.select('select[name="order"]', 'oldest');
  await acmePage.waitForFunction((id) => {
    const r = document.querySelector('#agenda-list tbody tr');
    return r && r.dataset.agenda !== id;
  }, { timeout: WAIT }, newer.id);
  const oldest = await ids();
  assert.deepEqual(oldest, [...newest].reverse());
  assert.match(await acmePage.evaluate(() => location.hash), /order=oldest/);
});

test('a DAG over 200 operations is drawn on a canvas that follows a burst of reports; the history stays a short list', async () => {
  const operations = [];
  for (let i = 0; i < 250; i++) {
    const payload = i < 10 ? { n: i } : { in: `@<op-${i - 10}.out>` };
    operations.push({ name: `op-${i}`, type: 'ffmpeg', payload });
  }
  const big = await submit(T.acme, { customerId: 'acme', title: 'big', operations });
  await acmePage.goto(BASE + `/#/agenda/acme/${encodeURIComponent(big.id)}`);
  await acmePage.waitForSelector('.dag-wrap[data-layout="layered"] canvas.dag', { timeout: WAIT });
  assert.equal(await acmePage.$eval('.dag-wrap', (e) => e.dataset.nodes), '250');
  assert.equal(await acmePage.$eval('.dag-wrap', (e) => e.dataset.edges), '240');
  assert.equal(await acmePage.$('svg.dag'), null, 'no SVG above 200 operations');

  // op-0 is the first box of the first column (layered layout: x = y = 8, 168×44); its bar
  // (8 px in, 36 px down, 4 px high) is read back from the canvas's pixels.
  const barPixel = () =>
    acmePage.$eval('canvas.dag', (c) => [...c.getContext('2d').getImageData(8 + 8 + 10, 8 + 38, 1, 1).data].slice(0, 3).join(','));
  await acmePage.waitForFunction(() => Number((document.querySelector('.dag-wrap') || { dataset: {} }).dataset.drawn || 0) > 0, { timeout: WAIT });
  assert.equal(await barPixel(), '230,233,239', 'an empty bar before any report');

  // A worker claims it and reports 150 operations at once (one stream, 150 requests in flight:
  // none may be refused).
  let lease = null;
  const deadline = Date.now() + WAIT;
  while (!lease && Date.now() < deadline) {
    const d = await gql(T.acmeService, 'mutation { getAgenda(insightId: "transcode", count: 10) { agenda { id } lease { id } } }');
    const mine = d.getAgenda.find((r) => r.agenda.id === big.id);
    if (mine) lease = mine.lease.id;
    else await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(lease, 'the scheduler queued the big agenda and the worker claimed it');
  const reports = [];
  for (let i = 0; i < 150; i++) {
    reports.push(
      gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
        p: { id: big.progressId, processingState: 'EXECUTING', operationProgress: [{ operation: `op-${i}`, processingState: 'EXECUTING', percentComplete: 50, resultPayload: { n: i } }] },
        l: lease,
      }),
    );
  }
  await Promise.all(reports);
  // The bar moved on the canvas (the executing colour, #3461c1).
  await acmePage.waitForFunction(
    () => [...document.querySelector('canvas.dag').getContext('2d').getImageData(26, 46, 1, 1).data].slice(0, 3).join(',') === '52,97,193',
    { timeout: WAIT },
  );
  // A click on the box selects the operation.
  const scroller = await acmePage.$('.dag-scroll');
  const box = await scroller.boundingBox();
  await acmePage.mouse.click(box.x + 8 + 84, box.y + 8 + 22);
  await acmePage.waitForFunction(() => (document.querySelector('.detail h3') || {}).textContent === 'op-0', { timeout: WAIT });
  const detailIs = (name) =>
    acmePage.waitForFunction((n) => (document.querySelector('.detail h3') || {}).textContent === n, { timeout: WAIT }, name);

  // Way round a drawing 25 columns wide (dash54 M2: 8.6 screens with no zoom, search or jump).
  // Found by name: selected, and the drawing scrolls (itself, not the page) to show it.
  const findOp = async (text) => {
    await acmePage.$eval('#dag-find', (i) => (i.value = ''));
    await acmePage.type('#dag-find', text);
    await acmePage.click('#dag-find-go');
  };
  await findOp('OP-137');
  await detailIs('op-137');
  // Column 13: x = 8 + 13 × 216.
  await acmePage.waitForFunction(
    () => { const e = document.querySelector('.dag-scroll'); return e.scrollLeft <= 2816 && 2816 + 168 <= e.scrollLeft + e.clientWidth; },
    { timeout: WAIT },
  );
  for (const [text, said] of [['zz', 'no operation matches "zz"'], ['-24', '11 operations match "-24"; type more of the name']]) {
    await findOp(text);
    await acmePage.waitForFunction((t) => (document.querySelector('.dag-said') || {}).textContent === t, { timeout: WAIT }, said);
  }
  await detailIs('op-137');
  // The next running operation after the selected one, in the agenda's order; none has failed.
  assert.equal(await acmePage.$eval('#dag-next-executing', (b) => b.textContent), 'Next running (150)');
  assert.equal(await acmePage.$eval('#dag-next-failed', (b) => b.disabled), true);
  const scrolled = await acmePage.evaluate(() => window.scrollY);
  await acmePage.click('#dag-next-executing');
  await detailIs('op-138');
  // Chosen in the drawing: the page stays, focus stays on the tool, and the tools say what is
  // selected, in words, with a way to its detail (dash55 M1, L2).
  assert.equal(await acmePage.evaluate(() => window.scrollY), scrolled, 'the page did not move');
  assert.equal(await acmePage.evaluate(() => document.activeElement && document.activeElement.id), 'dag-next-executing');
  assert.match(await acmePage.$eval('#dag-selected', (e) => e.textContent), /^Selected op-138: executing · 50%/);
  await acmePage.click('#dag-show-detail');
  await acmePage.waitForFunction(() => document.activeElement && document.activeElement.id === 'op-detail', { timeout: WAIT });
  // Fit: the whole drawing in view at once, and a click still hits the box under it (the last
  // column's last box, op-249, at x 5192, y 512 of the drawing).
  await acmePage.click('#dag-fit');
  await acmePage.waitForFunction(() => Number(document.querySelector('.dag-wrap').dataset.zoom) < 0.5, { timeout: WAIT });
  const zoom = Number(await acmePage.$eval('.dag-wrap', (e) => e.dataset.zoom));
  const fits = await acmePage.$eval('.dag-scroll', (e) => [e.scrollWidth <= e.clientWidth + 1, e.scrollHeight <= e.clientHeight + 1]);
  assert.deepEqual(fits, [true, true], `the drawing fits at zoom ${zoom}`);
  assert.equal(await acmePage.$eval('#dag-zoom', (e) => e.textContent), `${Math.round(zoom * 100)}%`);
  await acmePage.$eval('.dag-wrap', (e) => e.scrollIntoView({ block: 'start' }));
  const fitted = await (await acmePage.$('.dag-scroll')).boundingBox();
  await acmePage.mouse.click(fitted.x + (5192 + 84) * zoom, fitted.y + (512 + 22) * zoom);
  await detailIs('op-249');
  await shot(acmePage, 'agenda-large-fit');
  // Back to 100 %: op-249 is scrolled into view.
  await acmePage.click('#dag-zoom-reset');
  await acmePage.waitForFunction(() => document.querySelector('.dag-wrap').dataset.zoom === '1', { timeout: WAIT });
  await acmePage.waitForFunction(
    () => { const e = document.querySelector('.dag-scroll'); return e.scrollLeft <= 5192 && 5192 + 168 <= e.scrollLeft + e.clientWidth; },
    { timeout: WAIT },
  );
  // Its 150 results are one fold, one Tab to pass (dash14: one stop each).
  await acmePage.waitForFunction(() => /^150 results/.test((document.querySelector('details.results summary') || {}).textContent || ''), { timeout: WAIT });
  assert.equal(await acmePage.$eval('details.results', (d) => d.open), false, 'folded');
  // The header's parts are set apart (it read `probe only· added`).
  const meta = await acmePage.$eval('.agenda p.meta', (e) => e.textContent.replace(/\s+/g, ' '));
  assert.match(meta, /\S · added /);

  // The history has every report, but only a window of it is in the DOM, following the newest.
  await acmePage.waitForFunction(() => Number((document.querySelector('.timeline-wrap') || { dataset: {} }).dataset.events || 0) >= 152, { timeout: WAIT });
  const total = Number(await acmePage.$eval('.timeline-wrap', (e) => e.dataset.events));
  const rows = await acmePage.$$eval('#timeline tr[data-type]', (rs) => rs.map((r) => Number(r.dataset.version)));
  assert.ok(rows.length > 0 && rows.length < 60, `${rows.length} of ${total} rows in the DOM`);
  assert.equal(Math.max(...rows), total - 1, 'the newest event is in view');
  assert.equal(await acmePage.$eval('#timeline tr[data-type]', (r) => r.getBoundingClientRect().height), 28, 'rows have the height the list assumes');
  // Scrolled to the top, the first event is drawn; its data opens below the list.
  await acmePage.$eval('.timeline-wrap', (e) => (e.scrollTop = 0));
  await acmePage.waitForSelector('#timeline tr[data-version="0"]', { timeout: WAIT });
  await acmePage.click('#timeline tr[data-version="0"] button.link');
  await acmePage.waitForFunction(() => /Event 0:/.test((document.querySelector('#event-detail h3') || {}).textContent || ''), { timeout: WAIT });
  await shot(acmePage, 'agenda-large');
});

test("a failed operation's reason is on its row, without a click", async () => {
  // One attempt only: no automatic retry brings it back while later checks run.
  const failing = await submit(T.acme, { ...threeOps('acme', 'batch-fail'), params: { maximumAttempts: '1' } });
  const lease = await claim(failing.id);
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: {
      id: failing.progressId,
      processingState: 'EXECUTING',
      operationProgress: [{ operation: 'probe', processingState: 'COMPLETE', processingStateMessage: 'failed',
        diagnosticEvents: [{ message: 'probe: no such file s3://in/m.mov' }] }],
    },
    l: lease,
  });
  await acmePage.goto(BASE + `/#/agenda/acme/${encodeURIComponent(failing.id)}`);
  await acmePage.waitForFunction(
    () => /no such file/.test((document.querySelector('#op-list tr[data-op="probe"] td.message') || {}).textContent || ''),
    { timeout: WAIT },
  );
  const text = await acmePage.$eval('#op-list tr[data-op="probe"] td.message', (td) => td.textContent);
  assert.equal(text, 'failed: probe: no such file s3://in/m.mov');
  // Its bar is a failure's, and says whose it is (dash58 L1, L4: a full bar read as done, and
  // each bar was named "100% complete" alone).
  const [barClass, barLabel] = await acmePage.$eval('#op-list tr[data-op="probe"] .pbar', (b) => [b.className, b.getAttribute('aria-label')]);
  assert.equal(barClass, 'pbar failed');
  assert.match(barLabel, /^probe: \d+% complete, failed$/);
  // And under the header, with a way to it (dash54: on a large agenda the failed operation and
  // its reason were behind a button, a long table and a detail below the fold).
  await acmePage.waitForSelector('#failed-ops button[data-op="probe"]', { timeout: WAIT });
  const said = await acmePage.$eval('#failed-ops', (p) => p.textContent.replace(/\s+/g, ' ').trim());
  assert.equal(said, '1 failed: probe — failed: probe: no such file s3://in/m.mov');
  await acmePage.evaluate(() => window.scrollTo(0, 0));
  await acmePage.click('#failed-ops button[data-op="probe"]');
  await acmePage.waitForFunction(() => (document.querySelector('#op-detail h3') || {}).textContent === 'probe', { timeout: WAIT });
  await acmePage.waitForFunction(() => {
    const r = document.getElementById('op-detail').getBoundingClientRect();
    return r.top >= 0 && r.top < window.innerHeight;
  }, { timeout: WAIT });
});

test('a sign-in link followed in a tab already open on the dashboard signs it in', async () => {
  // dash54: only the fragment changed, so nothing read it, and the token stayed in the
  // address bar.
  const page = await newPage();
  await page.goto(BASE + '/#/agendas', { waitUntil: 'load' });
  await page.waitForSelector('#token', { timeout: WAIT });
  await page.evaluate((t) => { location.hash = '#token=' + encodeURIComponent(t); }, T.acme);
  await page.waitForSelector('#offer-accept', { timeout: WAIT });
  await page.click('#offer-accept');
  await page.waitForFunction(() => /acme-user/.test((document.querySelector('#who') || {}).textContent || ''), { timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pop.token')), T.acme);
  assert.doesNotMatch(await page.evaluate(() => location.href), /token=/);
  await page.browserContext().close();
});

test('a 120-character operation name stays in its box and its table cell; muted text reads at 4.5:1', async () => {
  // dash54 L2: such a name widened the operations table past the page and ran out of its DAG
  // box; L3: muted text (4.44:1) and the table headers (4.17:1) read under WCAG AA.
  const long = 'W'.repeat(120);
  const agenda = await submit(T.acme, { customerId: 'acme', title: 'long names', operations: [
    { name: long, type: 'ffmpeg', payload: {} },
    { name: 'after', type: 'ffmpeg', payload: {}, params: { dependsOn: long } },
  ] });
  await acmePage.goto(BASE + `/#/agenda/acme/${encodeURIComponent(agenda.id)}`);
  await acmePage.waitForSelector('svg.dag g.node', { timeout: WAIT });
  await acmePage.waitForSelector('#op-list tr[data-op]', { timeout: WAIT });
  const wide = await acmePage.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(wide[0] <= wide[1], `the page is ${wide[0]} px wide in a ${wide[1]} px window`);
  const name = await acmePage.$eval(`svg.dag g.node[data-op="${long}"] text.name`, (t) => [t.textContent, t.getComputedTextLength()]);
  assert.ok(name[0].endsWith('…') && name[1] <= 168 - 16 + 0.5, `the name is drawn ${name[1]} px wide: ${name[0]}`);
  // Contrast of the muted text and the table headers against what they are drawn on.
  const ratios = await acmePage.evaluate(() => {
    const rgb = (c) => c.match(/[\d.]+/g).slice(0, 4).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (e) => {
      for (; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length < 4 || c[3] > 0) return c;
      }
      return [255, 255, 255];
    };
    const ratio = (e) => {
      const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(background(e))];
      return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    };
    return {
      muted: Math.min(...[...document.querySelectorAll('main .muted')].map(ratio)),
      header: Math.min(...[...document.querySelectorAll('table.list th')].map(ratio)),
      // Every state's badge (dash55 M3: waiting 2.42:1, cancelled 3.06:1, succeeded 3.41:1,
      // failed 4.38:1), drawn here for the purpose.
      badges: (() => {
        const probe = document.createElement('div');
        for (const st of ['waiting', 'executing', 'succeeded', 'failed', 'cancelled', 'unstarted']) {
          const b = document.createElement('span');
          b.className = 'badge st-' + st;
          b.textContent = st;
          probe.appendChild(b);
        }
        document.querySelector('main').appendChild(probe);
        const worst = Math.min(...[...probe.children].map(ratio));
        probe.remove();
        return worst;
      })(),
      // Every state's box border in the drawing against its fill (dash55: an unstarted box's
      // dashed border 1.65:1, a waiting one's 2.42:1).
      borders: (() => {
        const ns = 'http://www.w3.org/2000/svg';
        const svg = document.createElementNS(ns, 'svg');
        svg.setAttribute('class', 'dag');
        const boxes = ['waiting', 'executing', 'succeeded', 'failed', 'cancelled', 'unstarted'].map((st) => {
          const g = document.createElementNS(ns, 'g');
          g.setAttribute('class', 'node st-' + st);
          const box = document.createElementNS(ns, 'rect');
          box.setAttribute('class', 'box');
          g.appendChild(box);
          svg.appendChild(g);
          return box;
        });
        document.querySelector('main').appendChild(svg);
        const contrast = (box) => {
          const s = getComputedStyle(box);
          const [a, b] = [lum(rgb(s.stroke)), lum(rgb(s.fill))];
          return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        };
        const worst = Math.min(...boxes.map(contrast));
        svg.remove();
        return worst;
      })(),
    };
  });
  assert.ok(ratios.muted >= 4.5 && ratios.header >= 4.5 && ratios.badges >= 4.5, JSON.stringify(ratios));
  assert.ok(ratios.borders >= 3, `a box's border against its fill: ${JSON.stringify(ratios)}`);
});

test('a rerun of chosen operations of a large agenda filters them, the chosen first', async () => {
  // dash55 L3: 501 checkboxes inline, 886 px tall, with no filter.
  const operations = [];
  for (let i = 0; i < 40; i++) operations.push({ name: `op-${i}`, type: 'ffmpeg', payload: {} });
  const agenda = await submit(T.acme, { customerId: 'acme', title: 'many', params: { maximumAttempts: '1' }, operations });
  const lease = await claim(agenda.id);
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: { id: agenda.progressId, processingState: 'EXECUTING', operationProgress: [{ operation: 'op-0', processingState: 'COMPLETE', processingStateMessage: 'failed' }] },
    l: lease,
  });
  await acmePage.goto(BASE + `/#/agenda/acme/${encodeURIComponent(agenda.id)}`);
  await acmePage.waitForSelector('#rerun-mode', { timeout: WAIT });
  await acmePage.select('#rerun-mode', 'reset');
  await acmePage.waitForSelector('#reset-filter', { timeout: WAIT });
  const labels = () => acmePage.$$eval('.actions .choose label', (ls) => ls.map((l) => l.textContent));
  assert.equal((await labels()).length, 30);
  assert.equal(await acmePage.$eval('#reset-shown', (e) => e.textContent), '0 chosen; 30 of 40 shown: filter to see the rest');
  await acmePage.type('#reset-filter', 'OP-3');
  await acmePage.waitForFunction(() => document.querySelectorAll('.actions .choose label').length === 11, { timeout: WAIT });
  const chosen = (await labels()).at(-1);
  await acmePage.click('.actions .choose label:last-child input');
  await acmePage.$eval('#reset-filter', (i) => { i.value = ''; i.dispatchEvent(new Event('input', { bubbles: true })); });
  await acmePage.waitForFunction(() => document.querySelectorAll('.actions .choose label').length === 30, { timeout: WAIT });
  assert.equal((await labels())[0], chosen, 'the chosen operation comes first');
  assert.match(await acmePage.$eval('#reset-shown', (e) => e.textContent), /^1 chosen/);
  assert.equal(await acmePage.$eval('#rerun-agenda', (b) => b.disabled), false);
});

test("a failure's 32 KiB reason neither widens nor lengthens the agenda page", async () => {
  // dash14: a reason without spaces made the page 167,601 px wide, one with spaces a row
  // 8,333 px tall; the server keeps 32 KiB of it.
  const failing = await submit(T.acme, { ...threeOps('acme', 'batch-long'), params: { maximumAttempts: '1' } });
  const lease = await claim(failing.id);
  const reason = 'E'.repeat(40000);
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: {
      id: failing.progressId,
      processingState: 'EXECUTING',
      operationProgress: [{ operation: 'probe', processingState: 'COMPLETE', processingStateMessage: 'failed',
        diagnosticEvents: [{ message: reason }] }],
    },
    l: lease,
  });
  await acmePage.goto(BASE + `/#/agenda/acme/${encodeURIComponent(failing.id)}`);
  const cell = '#op-list tr[data-op="probe"] td.message';
  await acmePage.waitForFunction((c) => /^failed: E/.test((document.querySelector(c) || {}).textContent || ''), { timeout: WAIT }, cell);
  const text = await acmePage.$eval(cell, (td) => td.textContent);
  assert.ok(text.length <= 300 && text.endsWith('…'), `the row's reason is cut: ${text.length} characters`);
  const wide = await acmePage.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(wide[0] <= wide[1] + 1, `the page is ${wide[0]} px wide in a ${wide[1]} px window`);
  // Opened, the whole reason (as the server keeps it) scrolls in a box of its own.
  await acmePage.click('#op-list tr[data-op="probe"]');
  await acmePage.waitForSelector('.diag-message', { timeout: WAIT });
  const box = await acmePage.$eval('.diag-message', (m) => [m.textContent.length, m.clientHeight, m.scrollHeight]);
  assert.ok(box[0] > 30000 && box[0] <= 32768, `the kept reason: ${box[0]} characters`);
  assert.ok(box[1] <= 160 && box[2] > box[1], `its box: ${box[1]} px of ${box[2]}`);
  const after = await acmePage.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(after[0] <= after[1] + 1, `opened, the page is ${after[0]} px wide in a ${after[1]} px window`);
});

test('a linkId as long as a URL is cut where it labels a batch, whole in its tooltip', async () => {
  // popclient57 M2: a linkId may be a presigned URL of up to 4,096 characters.
  const link = 'https://in.example/a.mp4?' + 'X-Amz-Signature=0a1b2c&'.repeat(150);
  const long = await submit(T.acme, threeOps('acme', link));
  const shown = async (sel) => {
    await acmePage.waitForSelector(sel, { timeout: WAIT });
    const [text, title] = await acmePage.$eval(sel, (e) => [e.textContent, e.title]);
    assert.ok(text.length <= 80 && text.endsWith('…'), `${sel}: ${text.length} characters shown`);
    assert.equal(title, link, `${sel}: the whole linkId in its tooltip`);
    const wide = await acmePage.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(wide[0] <= wide[1] + 1, `${sel}: the page is ${wide[0]} px wide in a ${wide[1]} px window`);
  };
  await acmePage.goto(BASE + '/#/agendas');
  await shown(`${rowSel(long.id)} a[href^="#/batch/"] .key`);
  await acmePage.goto(BASE + `/#/agenda/acme/${encodeURIComponent(long.id)}`);
  await shown('p.meta a[href^="#/batch/"] .key');
  await acmePage.click('p.meta a[href^="#/batch/"]');
  await shown('h1 .key');
  // The page's title is cut as its heading (dash58 L3: 4,108 characters).
  const title = await acmePage.title();
  assert.ok(title.length <= 100 && title.startsWith('Batch https://in.example/'), `title: ${title.length} characters`);
});

test('a server that stops answering is said, and the page reads everything again when it is back', async () => {
  const page = await newPage();
  await signIn(page, T.acme);
  await page.goto(BASE + '/#/insights');
  await page.waitForFunction(() => /transcode/.test(document.querySelector('main').textContent), { timeout: WAIT });
  // The server stops answering, as this page sees it: the browser's offline mode fails every
  // request and every new connection, WebSockets included.
  await page.setOfflineMode(true);
  await page.goto(BASE + '/#/agendas');
  await page.waitForSelector('#offline', { timeout: WAIT });
  assert.match(await page.$eval('#offline', (e) => e.textContent), /does not answer/);
  await page.waitForFunction(() => /OFFLINE/.test((document.querySelector('main .error') || {}).textContent || ''), { timeout: WAIT });
  await shot(page, 'offline');
  await page.setOfflineMode(false);
  // Back: the banner goes, the error with it, and the list is read.
  await page.waitForFunction(() => !document.querySelector('#offline'), { timeout: WAIT });
  await page.waitForFunction(
    () => !document.querySelector('main .error') && document.querySelectorAll('#agenda-list tr[data-agenda]').length > 0,
    { timeout: WAIT },
  );
  await page.browserContext().close();
  // The failed requests were this test's own doing.
  problems.splice(0, problems.length, ...problems.filter((p) => !/ERR_INTERNET_DISCONNECTED/.test(p)));
});

test('a server that answers but says it is not ready is said, with its reason, until it is ready again', async () => {
  // What a server whose store cannot write answers, as this page sees it: /readyz 503 with
  // the reason (newcomer55 M1: the pages looked healthy).
  const why = "the event store's file is damaged (database disk image is malformed): no write can be stored until it is repaired";
  let failing = true;
  const page = await newPage((req) => {
    if (!failing || new URL(req.url()).pathname !== '/readyz') return false;
    req.respond({ status: 503, contentType: 'text/plain', body: why + '\n' });
    return true;
  });
  await signIn(page, T.acme);
  await page.goto(BASE + '/#/agendas');
  await page.waitForSelector('#not-ready', { timeout: WAIT });
  assert.equal(await page.$eval('#not-ready .why', (e) => e.textContent), why);
  assert.match(await page.$eval('#not-ready', (e) => e.textContent), /^The server is not ready: changes may fail/);
  // The page still shows what it reads.
  await page.waitForSelector('#agenda-list tr[data-agenda]', { timeout: WAIT });
  failing = false;
  await page.waitForFunction(() => !document.querySelector('#not-ready'), { timeout: WAIT });
  await page.browserContext().close();
  problems.splice(0, problems.length, ...problems.filter((p) => !/503/.test(p)));
});

test('a token the server stops accepting signs out, saying why', async () => {
  const page = await newPage();
  await signIn(page, T.acme);
  await page.goto(BASE + '/#/agendas');
  await page.waitForSelector('#agenda-list tr[data-agenda]', { timeout: WAIT });
  // What a revoked token looks like from the page: the server answers 401 to it.
  await page.evaluate(() => sessionStorage.setItem('pop.token', 'tok_revoked_0000000000000000000000'));
  await page.goto(BASE + '/#/insights');
  await page.waitForSelector('#token', { timeout: WAIT });
  const text = await page.$eval('.error', (e) => e.textContent);
  assert.match(text, /UNAUTHENTICATED/);
  assert.match(text, /no longer accepts this token/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pop.token')), null);
  await page.browserContext().close();
  problems.splice(0, problems.length, ...problems.filter((p) => !/401/.test(p)));
});

test('a sign-in link opened in a tab signed in with none says whom it signs in as and waits for a yes', async () => {
  // hostile55 L1: a link another tenant made signed a fresh tab in as them, quietly.
  const page = await newPage();
  await page.goto(BASE + '/#token=' + encodeURIComponent(T.globex), { waitUntil: 'load' });
  await page.waitForSelector('#offer-name', { timeout: WAIT });
  assert.equal(await page.$eval('#offer-name', (e) => e.textContent), 'globex-user');
  // The question has the focus (dash55 L5).
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'offer-accept', { timeout: WAIT });
  assert.match(await page.$eval('#offer', (e) => e.textContent), /\(user; globex\)/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pop.token')), null, 'not signed in before the yes');
  assert.doesNotMatch(await page.evaluate(() => location.href), /token=/);
  // Not now: the sign-in form, nothing kept.
  await page.click('#offer-decline');
  await page.waitForFunction(() => !document.querySelector('#offer'), { timeout: WAIT });
  assert.ok(await page.$('#token'));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pop.token')), null);
  // A link with a token this server does not take says so.
  await page.evaluate(() => { location.hash = '#token=tok_nobody_0000000000000000000'; });
  await page.waitForSelector('#offer-refused', { timeout: WAIT });
  assert.equal(await page.$('#offer-accept'), null);
  await page.browserContext().close();
  problems.splice(0, problems.length, ...problems.filter((p) => !/401/.test(p)));
});

test('a sign-in link opened in a tab signed in with another token asks first', async () => {
  const page = await newPage();
  await followSignInLink(page, T.acme);
  await page.waitForFunction(() => /acme-user/.test((document.querySelector('#who') || {}).textContent || ''), { timeout: WAIT });
  const follow = async (answer) => {
    const asked = new Promise((resolve) => page.once('dialog', async (d) => {
      resolve(d.message());
      await (answer ? d.accept() : d.dismiss());
    }));
    // The tab, signed in, loads again by itself on the link (a reload here as well raced it:
    // one of the two was aborted, a failed request).
    await page.evaluate((t) => { location.hash = '#token=' + encodeURIComponent(t); }, T.globex);
    assert.match(await asked, /another token/);
    await page.waitForSelector('#who', { timeout: WAIT });
  };
  // Kept: still acme, and the link's token left the address bar.
  await follow(false);
  await page.waitForFunction(() => /acme-user/.test(document.querySelector('#who').textContent), { timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pop.token')), T.acme);
  assert.equal(await page.evaluate(() => location.hash), '#/');
  // Replaced, when the person says so.
  await follow(true);
  await page.waitForFunction(() => /globex-user/.test(document.querySelector('#who').textContent), { timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pop.token')), T.globex);
  await page.browserContext().close();
});

test('sign-out forgets the token', async () => {
  await acmePage.goto(BASE + '/#/agendas');
  await acmePage.waitForSelector('#signout', { timeout: WAIT });
  await acmePage.click('#signout');
  await acmePage.waitForSelector('#token', { timeout: WAIT });
  assert.equal(await acmePage.evaluate(() => sessionStorage.getItem('pop.token')), null);
  await acmePage.reload();
  await acmePage.waitForSelector('#token', { timeout: WAIT });
});

test("an operator's page of acme's agenda shows acme's alone when another tenant uses its ids", async () => {
  // Ids are chosen per customer: globex may use acme's agenda id, progress id and linkId.
  const ids = { id: 'twin-1', progressId: 'twin-p1' };
  const mine = await submit(T.acme, { ...threeOps('acme', 'twin-batch', 'acme job'), ...ids });
  const page = await newPage();
  await followSignInLink(page, T.admin);
  await page.waitForSelector('#state-counts', { timeout: WAIT });
  await page.goto(BASE + `/#/agenda/acme/${encodeURIComponent(mine.id)}`);
  await page.waitForSelector('svg.dag g.node', { timeout: WAIT });
  await submit(T.globex, { ...threeOps('globex', 'twin-batch', 'globex job'), ...ids });
  await gql(T.globex, 'mutation { cancelAgenda(agendaId: "twin-1", reason: "globex says acme failed") { position } }');
  // acme's worker reports; once the page shows it, globex's cancel has long been delivered too.
  const lease = await claim(mine.id);
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: { id: mine.progressId, processingState: 'EXECUTING', operationProgress: [{ operation: 'probe', processingState: 'EXECUTING', percentComplete: 30 }] },
    l: lease,
  });
  const bar = 'svg.dag g.node[data-op="probe"] rect.bar';
  await page.waitForFunction((sel) => document.querySelector(sel) && document.querySelector(sel).dataset.pct === '30', { timeout: WAIT }, bar);
  assert.equal(await page.$('h1 .badge[data-state="cancelled"]'), null, 'the header shows globex\'s cancel');
  const states = await page.$$eval('svg.dag g.node', (gs) => gs.map((g) => g.dataset.state));
  assert.ok(!states.includes('cancelled'), `operations: ${states}`);
  assert.doesNotMatch(await page.$eval('main', (m) => m.textContent), /globex says/);
  assert.ok(await page.$('#cancel-agenda:not([disabled])'), 'acme\'s agenda may still be cancelled');
  // The batch link is acme's batch: globex's agenda under the same linkId is not in it.
  await page.click('a[href="#/batch/acme/twin-batch"]');
  await page.waitForSelector('#batch-summary', { timeout: WAIT });
  const customers = await page.$$eval('section table.list tbody tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent));
  assert.deepEqual(customers, ['acme']);
  await page.browserContext().close();
});

test('a failed agenda whose retry is still to come can be cancelled from its page', async () => {
  // Attempt 1 of 2 fails; the server's retry waits out its backoff (30 s by default).
  const failing = await submit(T.acme, { ...threeOps('acme', 'retry-batch', 'failing'), params: { maximumAttempts: 2 } });
  const lease = await claim(failing.id);
  // Held, the page says by whom and until when (ops3am17: nothing told a dead worker's agenda
  // from a slow one).
  const holdingPage = await newPage();
  await signIn(holdingPage, T.acme);
  await holdingPage.goto(BASE + `/#/agenda/acme/${encodeURIComponent(failing.id)}`);
  await holdingPage.waitForSelector('#holding', { timeout: WAIT });
  assert.match(await holdingPage.$eval('#holding', (e) => e.textContent), /held by acme-worker: its lease ends in \d+ s/);
  await holdingPage.browserContext().close();
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: { id: failing.progressId, processingState: 'COMPLETE', processingStateMessage: 'failed',
      operationProgress: [{ operation: 'probe', processingState: 'COMPLETE', processingStateMessage: 'failed' }] },
    l: lease,
  });
  const page = await newPage();
  await signIn(page, T.acme);
  await page.goto(BASE + `/#/agenda/acme/${encodeURIComponent(failing.id)}`);
  await page.waitForSelector('h1 .badge[data-state="failed"]', { timeout: WAIT });
  // Failed, with a retry to come: said so, not read as the end (dash54).
  await page.waitForSelector('#retry-due', { timeout: WAIT });
  assert.match(await page.$eval('.agenda p.meta', (p) => p.textContent.replace(/\s+/g, ' ')), /a retry follows at \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(attempt 2 of 2\)/);
  // When: the server's backoff after the failure (30 s ± 20 % by default), as the API says it
  // (dash58 L2: no time was shown).
  const dueAt = await gql(T.acme, 'query($id: String!) { agendaProgress(id: $id) { completedTime retryDueTime } }', { id: failing.progressId });
  const wait = Date.parse(dueAt.agendaProgress.retryDueTime) - Date.parse(dueAt.agendaProgress.completedTime);
  assert.ok(wait >= 24000 && wait <= 36000, `retry due ${wait} ms after the failure`);
  assert.equal(await page.$eval('#retry-due time', (t) => t.getAttribute('datetime')), dueAt.agendaProgress.retryDueTime);
  // The button says what it does (ops3am13: a failed agenda's Cancel was disabled).
  await page.waitForSelector('#cancel-agenda:not([disabled])', { timeout: WAIT });
  assert.equal(await page.$eval('#cancel-agenda', (b) => b.textContent), 'Cancel retry');
  await page.click('#cancel-agenda');
  await page.waitForSelector('#cancel-confirm-box', { timeout: WAIT });
  assert.match(await page.$eval('#cancel-confirm-box', (b) => b.textContent), /retry is withdrawn/);
  await page.click('#cancel-confirm');
  await page.waitForSelector('h1 .badge[data-state="cancelled"]', { timeout: WAIT });
  const d = await gql(T.acme, 'query($id: String!) { agendaProgress(id: $id) { processingStateMessage attemptsCompleted } }', { id: failing.progressId });
  assert.deepEqual(d.agendaProgress, { processingStateMessage: 'cancelled', attemptsCompleted: 1 });
  // Cancelled, it has nothing left to cancel.
  await page.waitForSelector('#cancel-agenda[disabled]', { timeout: WAIT });
  // Its batch still reads failed, and the headline counts it so (review-s40c F6: it said
  // "no percent (an agenda failed)" and counted no failed agenda).
  await page.goto(BASE + '/#/batch/acme/retry-batch');
  await page.waitForSelector('#batch-summary', { timeout: WAIT });
  assert.equal(await page.$eval('#batch-summary', (e) => e.textContent),
    'COMPLETE · no percent (an agenda failed) · 1 agenda · 1 failed (it was cancelled after an operation failed)');
  // A failure its executor called deterministic is not retried: nothing to cancel either
  // (review-s40b: the page offered "Cancel retry" and the server answered CONFLICT).
  const final = await submit(T.acme, { ...threeOps('acme', 'retry-batch', 'deterministic'), params: { maximumAttempts: 3 } });
  const finalLease = await claim(final.id);
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: { id: final.progressId, processingState: 'EXECUTING',
      operationProgress: [{ operation: 'probe', processingState: 'COMPLETE', processingStateMessage: 'failed',
        diagnosticEvents: [{ message: 'no such codec', statusCode: 'NOT_RETRYABLE' }] }] },
    l: finalLease,
  });
  await page.goto(BASE + `/#/agenda/acme/${encodeURIComponent(final.id)}`);
  await page.waitForSelector('h1 .badge[data-state="failed"]', { timeout: WAIT });
  await page.waitForSelector('#cancel-agenda[disabled]', { timeout: WAIT });
  assert.equal(await page.$eval('#cancel-agenda', (b) => b.textContent), 'Cancel');
  // "Cancel selected" over a mixed storm tries every agenda (newcomer13: the first refusal,
  // a failure with no attempt left, ended the loop and the next kept its retry).
  const fail = async (maximumAttempts, title) => {
    const a = await submit(T.acme, { ...threeOps('acme', 'storm-batch', title), params: { maximumAttempts } });
    const l = await claim(a.id);
    await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
      p: { id: a.progressId, processingState: 'EXECUTING', operationProgress: [{ operation: 'probe', processingState: 'COMPLETE', processingStateMessage: 'failed' }] },
      l,
    });
    return a;
  };
  const stuck = await fail(1, 'no attempt left');
  const due = await fail(3, 'retry due');
  await page.goto(BASE + '/#/agendas?linkId=storm-batch');
  for (const a of [stuck, due]) {
    await page.waitForSelector(rowSel(a.id) + ' input[type=checkbox]', { timeout: WAIT });
    await page.click(rowSel(a.id) + ' input[type=checkbox]');
  }
  await page.click('#cancel-selected');
  await page.waitForSelector('#cancel-selected-confirm', { timeout: WAIT });
  await page.click('#cancel-selected-confirm');
  await page.waitForFunction(() => /1 of 2 not cancelled/.test((document.querySelector('[role=alert]') || {}).textContent || ''), { timeout: WAIT });
  // Which stay selected is said plainly (newcomer14: "1 done; they stay selected").
  assert.match(await page.$eval('[role=alert]', (e) => e.textContent), /\(1 done; the refused one stays selected\)/);
  const after = await gql(T.acme, 'query($id: String!) { agendaProgress(id: $id) { processingStateMessage } }', { id: due.progressId });
  assert.equal(after.agendaProgress.processingStateMessage, 'cancelled');
  // Another filter starts with nothing selected: a selection is of the rows on screen (dash12:
  // the refused one, no longer shown, was rerun from another filter's "Rerun selected").
  assert.equal(await page.$eval('.actions .muted', (e) => e.textContent), '1 selected');
  await page.select('select[name=state]', 'WAITING');
  await page.waitForFunction(() => (document.querySelector('.actions .muted') || {}).textContent === '0 selected', { timeout: WAIT });
  assert.equal(await page.$eval('#rerun-selected', (b) => b.disabled), true);
  await page.browserContext().close();
});

test('an agenda a skipExecution rerun parked is started again by Rerun on its page', async () => {
  // popclient22: a parked agenda (WAITING/pending, in no queue) could never be rerun.
  const parked = await submit(T.acme, threeOps('acme', 'parked-batch', 'parked'));
  // Its first operation ran before the cancel: parked, it shows no start of a run it is not in
  // (newcomer61 L5: reset to WAITING, its row showed the earlier run's start time).
  const ran = await claim(parked.id);
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: { id: parked.progressId, processingState: 'EXECUTING', operationProgress: [{ operation: 'probe', processingState: 'EXECUTING' }] },
    l: ran,
  });
  await gql(T.acme, 'mutation($a: String!) { cancelAgenda(agendaId: $a) { position } }', { a: parked.id });
  await gql(T.acme, 'mutation($a: String!) { rerunAgenda(agendaId: $a, params: ["skipExecution"]) { position } }', { a: parked.id });
  const page = await newPage();
  await signIn(page, T.acme);
  await page.goto(BASE + `/#/agenda/acme/${encodeURIComponent(parked.id)}`);
  await page.waitForSelector('h1 .badge[data-state="waiting"]', { timeout: WAIT });
  await page.waitForSelector('tr[data-op="probe"]', { timeout: WAIT });
  const started = await page.$eval('tr[data-op="probe"]', (r) => r.cells[6].textContent.trim());
  assert.equal(started, '', 'a waiting operation shows no start');
  await page.waitForSelector('#rerun-agenda:not([disabled])', { timeout: WAIT });
  await page.click('#rerun-agenda');
  // Re-added: the scheduler queues it, and acme's worker can claim it.
  await claim(parked.id);
  const d = await gql(T.acme, 'query($id: String!) { agendaProgress(id: $id) { processingStateMessage } }', { id: parked.progressId });
  assert.equal(d.agendaProgress.processingStateMessage, 'scheduled');
  await page.browserContext().close();
});

test('an outcome card lists what it counts; each page has its title; a link opened before its agenda finds it', async () => {
  // dash10: "5 failed" opened every COMPLETE agenda; every page was titled "pop"; a link
  // opened before its agenda was submitted said NOT_FOUND until a reload.
  // A failed agenda whose retry is still to come, and a newer one cancelled: the cancelled
  // list's top row is newer than the failed one.
  const failing = await submit(T.acme, { ...threeOps('acme', 'outcome-batch', 'to cancel'), params: { maximumAttempts: 2 } });
  const lease = await claim(failing.id);
  const newer = await submit(T.acme, threeOps('acme', 'outcome-batch', 'newer'));
  await gql(T.acme, 'mutation($a: String!) { cancelAgenda(agendaId: $a) { position } }', { a: newer.id });
  const page = await newPage();
  await signIn(page, T.admin);
  await page.goto(BASE + '/#/');
  await page.waitForSelector('#state-counts .card[data-state="cancelled"]', { timeout: WAIT });
  assert.equal(await page.title(), 'Overview · pop');
  const n = await page.$eval('#state-counts .card[data-state="cancelled"] .n', (e) => Number(e.textContent));
  assert.ok(n >= 1 && n < 50, `cancelled: ${n}`);
  await page.click('#state-counts .card[data-state="cancelled"]');
  await page.waitForFunction(() => location.hash === '#/agendas?state=CANCELLED', { timeout: WAIT });
  await page.waitForFunction((n) => {
    const rows = [...document.querySelectorAll('tr[data-agenda]')];
    return rows.length === n && rows.every((r) => r.dataset.state === 'cancelled');
  }, { timeout: WAIT }, n);
  assert.equal(await page.title(), 'Agendas · pop');
  // An older agenda that fails while the list is open, then moves from failed to cancelled
  // (COMPLETE both times), enters it live (dash11: only a change of processingState counted).
  await gql(T.acmeService, 'mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) { position } }', {
    p: { id: failing.progressId, processingState: 'COMPLETE', processingStateMessage: 'failed',
      operationProgress: [{ operation: 'probe', processingState: 'COMPLETE', processingStateMessage: 'failed' }] },
    l: lease,
  });
  await new Promise((r) => setTimeout(r, 1000));
  await gql(T.acme, 'mutation($a: String!) { cancelAgenda(agendaId: $a) { position } }', { a: failing.id });
  await page.waitForSelector(rowSel(failing.id) + '[data-state="cancelled"]', { timeout: WAIT });
  // The per-minute chart says its zone, as every time shown (UTC).
  await page.goto(BASE + '/#/');
  await page.waitForSelector('#per-minute canvas', { timeout: WAIT });
  assert.match(await page.$eval('#per-minute', (e) => e.textContent), /UTC/);
  const late = 'late-' + Date.now();
  await page.goto(BASE + `/#/agenda/acme/${late}`);
  await page.waitForFunction(() => /NOT_FOUND/.test(document.body.textContent), { timeout: WAIT });
  // Named with the request's cid, as every error (newcomer61 L4).
  assert.match(await page.$eval('main', (e) => e.textContent), /NOT_FOUND.*\(cid [0-9a-f-]{36}\)/s);
  await submit(T.acme, { ...threeOps('acme', 'late-batch'), id: late });
  await page.waitForSelector(`section.agenda[data-agenda="${late}"]`, { timeout: WAIT });
  assert.ok(!/NOT_FOUND/.test(await page.$eval('main', (e) => e.textContent)), 'the NOT_FOUND line is gone');
  assert.equal(await page.title(), `Agenda ${late} · pop`);
  await page.browserContext().close();
});

test('a page is read before it offers anything; the chart follows the window; the keyboard lands on a new page', async () => {
  // dash13: until the first live update a cancelled agenda read "unknown", its operations
  // "unstarted", its history "0 of 0", and offered Cancel; the chart kept its first width;
  // after a link, focus was on nothing and there was no way past the header.
  const done = await submit(T.acme, threeOps('acme', 'read-first', 'read first'));
  await gql(T.acme, 'mutation($a: String!) { cancelAgenda(agendaId: $a) { position } }', { a: done.id });
  const page = await newPage();
  // Every live message arrives 1.5 s late: what the page shows until then is what it knows.
  await page.evaluateOnNewDocument(() => {
    const Real = window.WebSocket;
    const late = (f, self) => (e) => setTimeout(() => f.call(self, e), 1500);
    window.WebSocket = class extends Real {
      set onmessage(f) { super.onmessage = f && late(f, this); }
      get onmessage() { return super.onmessage; }
      addEventListener(type, f, o) {
        return super.addEventListener(type, type === 'message' ? late(f, this) : f, o);
      }
    };
  });
  await signIn(page, T.acme);
  await page.goto(BASE + `/#/agenda/acme/${done.id}`);
  await page.waitForSelector(`section.agenda[data-agenda="${done.id}"]`, { timeout: WAIT });
  assert.equal(await page.$eval('section.agenda h1 .badge', (e) => e.dataset.state), 'loading');
  assert.equal(await page.$('#cancel-agenda'), null, 'nothing is offered before the state is read');
  const states = await page.$$eval('#op-list tr[data-op]', (rs) => rs.map((r) => r.dataset.state));
  assert.deepEqual(states, ['loading', 'loading', 'loading']);
  await page.waitForSelector('section.agenda h1 .badge[data-state="cancelled"]', { timeout: WAIT });
  assert.ok(await page.$('#rerun-agenda'), 'a read cancelled agenda offers Rerun');
  assert.match(await page.$eval('#history-count', (e) => e.textContent), /\d+ of \d+ events/);
  await page.browserContext().close();

  // The chart's width follows the window, both ways.
  const admin = await newPage();
  await signIn(admin, T.admin);
  await admin.goto(BASE + '/#/');
  await admin.waitForSelector('#per-minute canvas', { timeout: WAIT });
  const width = () => admin.$eval('#per-minute canvas', (c) => c.getBoundingClientRect().width);
  const wide = await width();
  await admin.setViewport({ width: 800, height: 860 });
  await admin.waitForFunction(() => {
    const c = document.querySelector('#per-minute canvas').getBoundingClientRect();
    return c.right <= document.documentElement.clientWidth && c.width < 800;
  }, { timeout: WAIT });
  await admin.setViewport({ width: 1280, height: 860 });
  await admin.waitForFunction((w) => document.querySelector('#per-minute canvas').getBoundingClientRect().width >= w - 2, { timeout: WAIT }, wide);

  // Following a link from the keyboard puts focus on the new page; the first Tab of a page
  // offers a way past the header.
  await admin.goto(BASE + '/#/agendas');
  await admin.waitForSelector(rowSel(done.id) + ' a', { timeout: WAIT });
  await admin.focus(rowSel(done.id) + ' a');
  await admin.keyboard.press('Enter');
  await admin.waitForSelector(`section.agenda[data-agenda="${done.id}"]`, { timeout: WAIT });
  await admin.waitForFunction(() => document.activeElement && document.activeElement.id === 'main', { timeout: WAIT });
  await admin.reload();
  await admin.waitForSelector(`section.agenda[data-agenda="${done.id}"]`, { timeout: WAIT });
  await admin.keyboard.press('Tab');
  assert.equal(await admin.evaluate(() => document.activeElement.id), 'skip');
  await admin.keyboard.press('Enter');
  assert.equal(await admin.evaluate(() => document.activeElement.id), 'main');
  await admin.browserContext().close();
});

test("a template's run form says whom an empty customer runs it for", async () => {
  const template = (id, customerId) => ({
    id, title: id, customerId: 'acme', isGlobal: false,
    agenda: { customerId, operations: [{ name: 'probe', type: 'ffmpeg', payload: {} }] },
  });
  const create = 'mutation($t: JSON!) { createTemplate(template: $t) { position } }';
  await gql(T.admin, create, { t: template('tpl-own', 'acme') });
  await gql(T.admin, create, { t: template('tpl-open', '') });
  const hint = async (token, id) => {
    const page = await newPage();
    await signIn(page, token);
    await page.goto(BASE + '/#/templates/' + id);
    await page.waitForSelector('#run-template input', { timeout: WAIT });
    const said = await page.$eval('#run-template input', (e) => e.placeholder);
    await page.close();
    return said;
  };
  assert.equal(await hint(T.admin, 'tpl-own'), "acme (the template's customer)");
  assert.equal(await hint(T.admin, 'tpl-open'), 'required: you act for several customers');
  assert.equal(await hint(T.acme, 'tpl-open'), 'acme (your only customer)');
});

test('no console errors, page errors or off-host requests', () => {
  assert.deepEqual(problems, []);
  assert.deepEqual(offHost, []);
});

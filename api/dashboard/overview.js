// Overview (agendas per state, completions and failures per minute, every insight's work),
// Batch (a linkId's ProgressSummary and agendas), Insights and pools, and Templates.

import { html, useState, useEffect, useRef, useCallback } from './vendor/htm-preact-3.1.1.mjs';
import { gql, subscribe, coalesced, fmtTime, GqlError } from './api.js';
import { ErrorLine, Key, StateBadge, STATES, agendaHref, may, useAgendaFeed } from './views.js';

/// A batch page reads its summary again at most this often (ms), one read at a time.
const BATCH_READ_MS = 250;

const STATS_QUERY = `query($m: Int) { agendaStats(minutes: $m) {
  waiting executing succeeded failed cancelled complete capped
  perMinute { minute succeeded failed cancelled } } }`;

const INSIGHTS_QUERY = `{ insights(first: 200) { items { id title customerId resourcePoolId queueName queueSize schedulingAlgorithm
  mappers isGlobal allowedCustomerIds queueDepth waiting executing waitingByCustomer { customerId count } } } }`;

/// Re-runs `load` when the visible agendas change (coalesced to at most one re-read per
/// second: counts are aggregates, the per-row feed is the list's job).
function useLiveReload(customers, load) {
  const timer = useRef(null);
  useAgendaFeed(
    customers,
    () => {
      if (timer.current) return;
      timer.current = setTimeout(() => {
        timer.current = null;
        load();
      }, 1000);
    },
    load,
  );
  useEffect(() => () => timer.current && clearTimeout(timer.current), []);
}

export function OverviewView({ me, customers }) {
  const [stats, setStats] = useState(null);
  const [insights, setInsights] = useState(null);
  const [error, setError] = useState(null);
  const load = useCallback(() => {
    Promise.all([gql(STATS_QUERY, { m: 60 }), gql(INSIGHTS_QUERY)])
      .then(([s, i]) => {
        setStats({ ...s.agendaStats, at: Date.now() });
        setInsights(i.insights.items);
        setError(null);
      })
      .catch(setError);
  }, []);
  useEffect(load, [load]);
  useLiveReload(customers, load);
  // The last 60 minutes move on when nothing happens too (dash12: after a quiet night an old
  // burst of failures sat at the chart's right edge, read as now).
  useEffect(() => {
    const timer = setInterval(load, 60000);
    return () => clearInterval(timer);
  }, [load]);
  return html`<section>
    <h1>Overview</h1>
    <${ErrorLine} error=${error}/>
    ${stats && html`<div class="cards" id="state-counts">
      ${STATES.map((s) => html`<a class=${'card st-' + s} data-state=${s} href=${'#/agendas' + stateQuery(s)}>
        <span class="n">${stats[s]}</span><span class="label">${s}</span></a>`)}
    </div>
    ${stats.capped ? html`<p class="muted">Counts are capped (very large read model).</p>` : ''}
    <h2>Completions and failures per minute <span class="muted">(last 60 minutes)</span></h2>
    <${Chart} series=${stats.perMinute} until=${stats.at}/>`}
    <h2>Insights</h2>
    ${insights && html`<${InsightTable} insights=${insights}/>`}
  </section>`;
}

function stateQuery(s) {
  if (s === 'waiting') return '?state=WAITING';
  if (s === 'executing') return '?state=EXECUTING';
  // The card's own outcome (dash10: "5 failed" opened every COMPLETE agenda).
  if (['succeeded', 'failed', 'cancelled'].includes(s)) return '?state=' + s.toUpperCase();
  return '?state=COMPLETE';
}

/// uPlot (a classic script: window.uPlot) drawing succeeded, failed and cancelled per minute.
function Chart({ series, until }) {
  const el = useRef(null);
  const plot = useRef(null);
  // The hour the chart spans, ending at the read (not at the last minute with an agenda).
  const span = useRef([0, 0]);
  span.current = [Math.floor(until / 1000) - 3600, Math.floor(until / 1000)];
  useEffect(() => {
    const xs = series.map((m) => Date.parse(m.minute) / 1000);
    const data = [xs, series.map((m) => m.succeeded), series.map((m) => m.failed), series.map((m) => m.cancelled)];
    if (!plot.current) {
      const width = Math.max(320, (el.current.clientWidth || 800) - 8);
      plot.current = new window.uPlot(
        {
          width,
          height: 220,
          series: [
            // As every time of the dashboard reads (dash11: uPlot's own "6:25am", "12/6/26").
            { label: 'time (UTC)', value: (u, ts) => (ts == null ? '' : new Date(ts * 1e3).toISOString().replace('T', ' ').slice(0, 16) + 'Z') },
            { label: 'succeeded', stroke: '#2e9e5b', fill: 'rgba(46,158,91,0.12)' },
            { label: 'failed', stroke: '#d64545' },
            { label: 'cancelled', stroke: '#8a94a6' },
          ],
          // In UTC, as every other time of the dashboard (dash10: the browser's zone, unsaid).
          tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
          scales: { x: { time: true, range: () => span.current } },
          axes: [{ label: 'UTC', values: (u, splits) => splits.map((ts) => new Date(ts * 1e3).toISOString().slice(11, 16)) }, { label: 'per minute' }],
        },
        data,
        el.current,
      );
    } else {
      plot.current.setData(data);
    }
  }, [series, until]);
  // Follows its box (dash13: drawn once at the width of the time, a narrowed window cut off
  // the latest minutes and a widened one kept it small).
  useEffect(() => {
    if (!window.ResizeObserver) return undefined;
    let frame = 0;
    const seen = new window.ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => {
        if (!plot.current || !el.current) return;
        const width = Math.max(320, el.current.clientWidth - 8);
        if (Math.abs(width - plot.current.width) > 1) plot.current.setSize({ width, height: 220 });
      });
    });
    seen.observe(el.current);
    return () => {
      cancelAnimationFrame(frame);
      seen.disconnect();
    };
  }, []);
  useEffect(() => () => plot.current && plot.current.destroy(), []);
  return html`<div class="chart" id="per-minute" data-until=${new Date(span.current[1] * 1000).toISOString()} ref=${el}></div>`;
}

function InsightTable({ insights }) {
  return html`<table class="list" id="insight-table"><thead><tr><th>insight</th><th>pool</th><th>algorithm</th><th>queue</th>
    <th>queue depth</th><th>waiting</th><th>executing</th><th>waiting per customer</th></tr></thead>
    <tbody>${insights.map((i) => html`<tr data-insight=${i.id}>
      <td><a href=${'#/agendas?insight=' + encodeURIComponent(i.id)}>${i.id}</a> <span class="muted">${i.title}</span></td>
      <td>${i.resourcePoolId}</td><td>${i.schedulingAlgorithm}</td><td>${i.queueName || ''} (${i.queueSize})</td>
      <td class="num">${i.queueDepth}</td><td class="num">${i.waiting}</td><td class="num">${i.executing}</td>
      <td>${i.waitingByCustomer.map((c) => html`<span class="chip">${c.customerId}: ${c.count}</span>`)}</td></tr>`)}</tbody></table>`;
}

export function InsightsView({ me, customers }) {
  const [insights, setInsights] = useState(null);
  const [pools, setPools] = useState(null);
  const [error, setError] = useState(null);
  const load = useCallback(() => {
    Promise.all([gql(INSIGHTS_QUERY), gql('{ resourcePools(first: 200) { items { id title customerId insightIds } } }')])
      .then(([i, p]) => {
        setInsights(i.insights.items);
        setPools(p.resourcePools.items);
      })
      .catch(setError);
  }, []);
  useEffect(load, [load]);
  useLiveReload(customers, load);
  return html`<section><h1>Insights and pools</h1><${ErrorLine} error=${error}/>
    ${insights && html`<${InsightTable} insights=${insights}/>
      <h2>Configuration</h2>${insights.map((i) => html`<details><summary>${i.id}</summary><pre class="json">${JSON.stringify(
        { title: i.title, customerId: i.customerId, resourcePoolId: i.resourcePoolId, schedulingAlgorithm: i.schedulingAlgorithm, queueName: i.queueName, queueSize: i.queueSize, mappers: i.mappers, isGlobal: i.isGlobal, allowedCustomerIds: i.allowedCustomerIds },
        null,
        2,
      )}</pre></details>`)}`}
    <h2>Resource pools</h2>
    ${pools && html`<table class="list" id="pool-table"><thead><tr><th>pool</th><th>title</th><th>owner</th><th>insights</th></tr></thead>
      <tbody>${pools.map((p) => html`<tr><td>${p.id}</td><td>${p.title || ''}</td><td>${p.customerId}</td><td>${p.insightIds.join(', ')}</td></tr>`)}</tbody></table>`}
  </section>`;
}

/// One customer's batch (`#/batch/<customer>/<linkId>`); an old link without the customer
/// (`#/batch/<linkId>`) shows every visible customer's agendas of the linkId, each row naming
/// its customer.
export function BatchView({ me, customerId, linkId }) {
  const [summary, setSummary] = useState(null);
  const [error, setError] = useState(null);
  const c = customerId || null;
  const load = useCallback(() => {
    return gql(
      `query($l: String!, $c: String) { progressSummary(linkId: $l, customerId: $c) { linkId processingState processingPercent
        progressList { agendaId customerId title processingState processingStateMessage percentComplete failsBatch updatedTime } } }`,
      { l: linkId, c },
    )
      .then((d) => setSummary(d.progressSummary))
      .catch(setError);
  }, [linkId, c]);
  useEffect(load, [load]);
  useEffect(() => {
    const reload = coalesced(load, BATCH_READ_MS);
    const off = subscribe('subscription($l: String!, $c: String) { agendaProgressByLinkId(linkId: $l, customerId: $c) { position lagged } }', { l: linkId, c }, () => reload(), setError);
    return () => {
      reload.cancel();
      off();
    };
  }, [linkId, c]);
  return html`<section><h1>Batch <${Key} text=${linkId}/>${c ? html` <span class="muted">of ${c}</span>` : ''}</h1><${ErrorLine} error=${error}/>
    ${summary && html`<p class="meta" id="batch-summary">${batchLine(summary)}</p>
      <table class="list"><thead><tr><th>agenda</th><th>customer</th><th>title</th><th>state</th><th>progress</th><th>updated</th></tr></thead>
      <tbody>${summary.progressList.map((p) => html`<tr data-agenda=${p.agendaId}><td><a href=${agendaHref(p.customerId, p.agendaId)}>${p.agendaId}</a></td>
        <td>${p.customerId}</td><td>${p.title || ''}</td><td><${StateBadge} p=${p}/></td><td>${Math.round(p.percentComplete || 0)}%</td><td>${fmtTime(p.updatedTime)}</td></tr>`)}</tbody></table>`}
  </section>`;
}

export function TemplatesView({ me }) {
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    gql('{ templates(first: 200) { items { id title customerId isGlobal isDefaultTemplate updatedTime } } }')
      .then((d) => setItems(d.templates.items))
      .catch(setError);
  }, []);
  return html`<section><h1>Templates</h1><${ErrorLine} error=${error}/>
    ${items && html`<table class="list" id="template-table"><thead><tr><th>template</th><th>title</th><th>owner</th><th>global</th><th>updated</th></tr></thead>
      <tbody>${items.map((t) => html`<tr><td><a href=${'#/templates/' + encodeURIComponent(t.id)}>${t.id}</a></td><td>${t.title || ''}</td><td>${t.customerId}</td>
        <td>${t.isGlobal ? 'yes' : ''}</td><td>${fmtTime(t.updatedTime)}</td></tr>`)}</tbody></table>`}
    ${items && !items.length && html`<p class="muted">No templates.</p>`}
  </section>`;
}

/// What the customer field of a template's run form says when empty: whom the server runs it
/// for then (`run_customer`: the template agenda's customer when the caller may act for it,
/// else the caller's only customer), or that one must be named (it said "your only customer"
/// to an admin of every customer).
export function runCustomerHint(me, t) {
  const mayActFor = (c) => me.customers.includes('*') || me.customers.includes(c);
  const body = typeof t.agenda?.customerId === 'string' ? t.agenda.customerId.trim() : '';
  if (body && !body.includes('@<') && mayActFor(body)) return `${body} (the template's customer)`;
  const own = me.customers.filter((c) => c !== '*');
  if (!me.customers.includes('*') && own.length === 1) return `${own[0]} (your only customer)`;
  return 'required: you act for several customers';
}

export function TemplateView({ me, id, customers }) {
  const [t, setT] = useState(null);
  const [payload, setPayload] = useState('{}');
  const [customer, setCustomer] = useState('');
  const [error, setError] = useState(null);
  const [ran, setRan] = useState(null);
  const [loaded, setLoaded] = useState(false);
  useEffect(() => {
    setLoaded(false);
    gql('query($id: String!) { template(id: $id) { id title customerId agenda staticParameters params isGlobal allowedCustomerIds } }', { id })
      .then((d) => {
        setT(d.template);
        setLoaded(true);
        // As the agenda page says of one it cannot show (dash8: the page was left blank).
        if (!d.template) setError(new GqlError([{ message: `no template ${id} is visible to you`, extensions: { code: 'NOT_FOUND', cid: d.cid } }]));
      })
      .catch(setError);
  }, [id]);
  const run = async (e) => {
    e.preventDefault();
    setError(null);
    let p;
    try {
      p = JSON.parse(payload);
    } catch (err) {
      setError(new Error('payload: not JSON: ' + err.message));
      return;
    }
    try {
      const d = await gql('mutation($t: String!, $p: JSON, $c: String) { runTemplate(templateId: $t, payload: $p, customerId: $c) { agenda { id customerId } } }', {
        t: id,
        p,
        c: customer || null,
      });
      setRan(d.runTemplate.agenda);
    } catch (err) {
      setError(err);
    }
  };
  if (!t) return html`<section><h1>Template ${id}</h1>${!loaded && !error && html`<p class="muted">Loading…</p>`}<${ErrorLine} error=${error}/></section>`;
  return html`<section><h1>Template ${t.id}</h1><p class="meta">${t.title || ''} · owner ${t.customerId}${t.isGlobal ? ' · global' : ''}</p>
    <${ErrorLine} error=${error}/>
    <h2>Agenda</h2><pre class="json">${JSON.stringify(t.agenda, null, 2)}</pre>
    ${Object.keys(t.staticParameters || {}).length ? html`<h2>Static parameters</h2><pre class="json">${JSON.stringify(t.staticParameters, null, 2)}</pre>` : ''}
    ${may(me, 'submit') && html`<h2>Run</h2><form id="run-template" onSubmit=${run}>
      <label>customer <input value=${customer} list="tpl-customers" placeholder=${runCustomerHint(me, t)} onInput=${(e) => setCustomer(e.target.value.trim())}/></label>
      <datalist id="tpl-customers">${(customers || []).map((c) => html`<option value=${c}/>`)}</datalist>
      <label class="block">payload (JSON)<textarea rows="8" value=${payload} onInput=${(e) => setPayload(e.target.value)}></textarea></label>
      <button type="submit">Run template</button></form>
      ${ran && html`<p>Submitted <a href=${agendaHref(ran.customerId, ran.id)}>${ran.id}</a>.</p>`}`}
  </section>`;
}

/// The batch's headline: its state, its percent (none once an agenda failed: DOMAIN.md §4.3),
/// how many agendas and how many of them failed — by the server's rule (`failsBatch`: an agenda
/// cancelled after an operation failed counts, review-s40c F6) —; a linkId no visible agenda
/// carries says so.
export function batchLine(summary) {
  const n = summary.progressList.length;
  if (!n) return 'no agenda you may see carries this linkId';
  const failing = summary.progressList.filter((p) => p.failsBatch);
  const cancelled = failing.filter((p) => /^cancelled$/i.test(p.processingStateMessage || '')).length;
  const percent = summary.processingPercent == null ? 'no percent (an agenda failed)' : `${Math.round(summary.processingPercent)}%`;
  const failed = !failing.length ? ''
    : ` · ${failing.length} failed${cancelled ? ` (${cancelled === failing.length && cancelled === 1 ? 'it was' : `${cancelled} of them`} cancelled after an operation failed)` : ''}`;
  return `${summary.processingState} · ${percent} · ${n} ${n === 1 ? 'agenda' : 'agendas'}${failed}`;
}

// The dashboard's views over the public GraphQL API. Each view reads a page, then follows
// changes over graphql-ws; a `lagged` item or a reconnect makes it re-read (resync), and
// bursts of updates are applied once per animation frame.

import { html, useState, useEffect, useLayoutEffect, useRef, useMemo, useCallback, Component } from './vendor/htm-preact-3.1.1.mjs';
import { gql, subscribe, perFrame, stateOf, fmtTime, GqlError, onReconnect } from './api.js';
import { Dag, LARGE } from './dag.js';

export const STATES = ['waiting', 'executing', 'succeeded', 'failed', 'cancelled'];
/// An operation's state in the drawing while its progress is being read.
const LOADING = { state: 'loading', percent: null, message: '' };
/// An agenda page applies live progress at most this often (ms): a person reads bars and
/// states at ten changes a second as well as at sixty, and the page's work per second stays
/// bounded however many reports arrive (all of them are applied, a batch at a time).
const LIVE_MS = 100;
const PAGE = 50;
/// An agenda page whose agenda is not (yet) there looks again this often (ms).
const NOT_FOUND_AGAIN_MS = 2000;
const NOT_FOUND_AGAIN_MAX_MS = 30000;
/// An admin's page reads the list of customers again this often (ms), to follow new ones.
const CUSTOMERS_AGAIN_MS = 15000;

const PROGRESS_FIELDS = `id agendaId customerId title linkId processingState processingStateMessage
  percentComplete addedTime updatedTime startedTime completedTime agendaInsight { insightId resourcePoolId }`;

/// Focus for a confirmation that replaces its button: its safe answer when it opens, its
/// button again when it closes (dash12: focus fell to the page, and Tab skipped the answers);
/// Escape closes it. Returns the refs of the button and of the safe answer, and the key
/// handler for the confirmation.
function useConfirmFocus(confirming, setConfirming) {
  const button = useRef(null);
  const keep = useRef(null);
  const was = useRef(false);
  useEffect(() => {
    if (confirming && keep.current) keep.current.focus();
    else if (!confirming && was.current && button.current) button.current.focus();
    was.current = confirming;
  }, [confirming]);
  const onKeyDown = (e) => {
    if (e.key === 'Escape') setConfirming(false);
  };
  return { button, keep, onKeyDown };
}

export function ErrorLine({ error }) {
  if (!error) return null;
  const e = error instanceof GqlError ? error : { message: String(error), code: 'ERROR', cid: '' };
  return html`<p class="error" role="alert"><b>${e.code}</b> ${e.message}${e.cid ? html` <span class="muted">(cid ${e.cid})</span>` : ''}</p>`;
}

export function StateBadge({ p, state }) {
  const s = state || stateOf(p);
  return html`<span class=${'badge st-' + s} data-state=${s}>${s}</span>`;
}

function Bar({ pct, state, of }) {
  const v = Math.max(0, Math.min(100, pct || 0));
  // A failed one's bar is in the failure's colour and says so: a full bar in the running
  // colour read as done (dash58 L1: a failed agenda's headline showed "100%" like a success).
  const failed = state === 'failed';
  // Named by what it measures where several are on one page (dash58 L4: each was "100%
  // complete" alone).
  const label = (of ? of + ': ' : '') + v.toFixed(0) + '% complete' + (failed ? ', failed' : '');
  // A transform, not a width: a new value (ten a second on a live agenda) then moves the bar
  // in the compositor, with no style, layout or paint of the page per frame of its easing.
  // A progress bar to assistive technology too (dash12: the list's cell read as empty).
  return html`<span class=${failed ? 'pbar failed' : 'pbar'} role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=${v.toFixed(0)} aria-label=${label} title=${v.toFixed(0) + '%' + (failed ? ', failed' : '')} data-pct=${v.toFixed(0)}><span style=${'transform:scaleX(' + v / 100 + ')'}></span></span>`;
}

/// Whether the signed-in principal's role allows `action` (the server's answer in `me.allowed`).
export const may = (me, action) => !!me && (me.allowed || []).includes(action);

export const agendaHref = (customerId, id) => `#/agenda/${encodeURIComponent(customerId)}/${encodeURIComponent(id)}`;
/// A batch is one customer's: linkIds are chosen per customer, so another tenant's agendas
/// under the same linkId are not part of it.
export const batchHref = (customerId, linkId) => `#/batch/${encodeURIComponent(customerId)}/${encodeURIComponent(linkId)}`;

/// Characters of a linkId shown where it labels a batch: a linkId may be a URL of up to 4,096
/// characters (popclient57 M2), which wrapped whole filled a list row or a heading.
const KEY_SHOWN = 80;

/// A linkId (or other long key) as text, cut to [`KEY_SHOWN`] characters.
export function cutKey(text) {
  const chars = Array.from(text || '');
  return chars.length <= KEY_SHOWN ? text || '' : chars.slice(0, KEY_SHOWN - 1).join('') + '…';
}

/// A linkId (or other long key) cut to [`KEY_SHOWN`] characters, the whole in its tooltip.
export function Key({ text }) {
  const cut = cutKey(text);
  if (cut === (text || '')) return cut;
  return html`<span class="key" title=${text}>${cut}</span>`;
}

// ---- Agendas ---------------------------------------------------------------------------

/// The filter as the API takes it, from the route's query string.
const OUTCOMES = ['SUCCEEDED', 'FAILED', 'CANCELLED'];

export function filterFromQuery(q) {
  const f = {};
  if (q.customer) f.customerId = q.customer;
  if (q.linkId) f.linkId = q.linkId;
  if (q.insight) f.insightId = q.insight;
  // SUCCEEDED, FAILED, CANCELLED: COMPLETE agendas that ended so (the overview's cards).
  if (OUTCOMES.includes(q.state)) {
    f.processingState = 'COMPLETE';
    f.outcome = q.state;
  } else if (q.state) f.processingState = q.state;
  // The inputs are UTC, as every time the dashboard shows (dash8: read as the browser's local
  // time, an "added" time copied from the table gave another window).
  if (q.from) f.from = utcInput(q.from);
  if (q.until) f.until = utcInput(q.until);
  // Newest first unless asked otherwise: the server walks its index backwards.
  f.newestFirst = q.order !== 'oldest';
  return f;
}

/// Whether a live progress passes the list's filter (the server filtered by visibility
/// already; this only decides whether a row not on the page belongs to it).
/// A `datetime-local` value (no zone) read as UTC; a value with a zone as it says.
function utcInput(v) {
  const zoned = /(Z|[+-]\d\d:?\d\d)$/i.test(v);
  const t = new Date(zoned ? v : `${v}Z`);
  return Number.isNaN(t.getTime()) ? new Date(v).toISOString() : t.toISOString();
}

function passes(f, p) {
  if (f.customerId && p.customerId !== f.customerId) return false;
  if (f.linkId && p.linkId !== f.linkId) return false;
  if (f.insightId && (!p.agendaInsight || p.agendaInsight.insightId !== f.insightId)) return false;
  if (f.processingState && p.processingState !== f.processingState) return false;
  if (f.outcome && stateOf(p) !== f.outcome.toLowerCase()) return false;
  const t = p.addedTime && Date.parse(p.addedTime);
  if (f.from && !(t >= Date.parse(f.from))) return false;
  if (f.until && !(t < Date.parse(f.until))) return false;
  return true;
}

/// Follows every agenda the caller may see: one subscription per visible customer (the API
/// follows changes per customer). `onChange(items)` gets coalesced progress updates,
/// `onResync()` is called after a lag.
export function useAgendaFeed(customers, onChange, onResync) {
  const cb = useRef({ onChange, onResync });
  cb.current = { onChange, onResync };
  const key = (customers || []).join(',');
  // The customers followed before: when more come (an admin's page, a customer created since),
  // what they did before they were followed is read again (dash11: a new customer's agendas
  // submitted before the customer list was read again never showed).
  const followed = useRef(null);
  useEffect(() => {
    if (!customers || !customers.length) return undefined;
    const before = followed.current;
    followed.current = key;
    const apply = perFrame((items) => {
      const lagged = items.some((u) => u.lagged);
      const progress = items.filter((u) => u.progress).map((u) => u.progress);
      if (progress.length) cb.current.onChange(progress);
      if (lagged) cb.current.onResync();
    });
    const offs = customers.map((c) =>
      subscribe(
        `subscription($c: String!) { agendaProgressByCustomer(customerId: $c) { lagged resync removed progress { ${PROGRESS_FIELDS} } } }`,
        { c },
        (d) => apply(d.agendaProgressByCustomer),
        () => {},
      ),
    );
    const offReconnect = onReconnect(() => cb.current.onResync());
    if (before !== null && before !== key) cb.current.onResync();
    return () => {
      offs.forEach((off) => off());
      offReconnect();
    };
  }, [key]);
}

/// The customers whose agendas the caller sees: its own, or every customer for `*`.
export function useVisibleCustomers(me) {
  const [customers, setCustomers] = useState(null);
  useEffect(() => {
    if (!me) return;
    if (!me.customers.includes('*')) {
      setCustomers(me.customers);
      return;
    }
    // Read again now and then: a customer created after the page loaded is followed too
    // (dash10: its agendas never showed, nor counted, until a reload). Set only when the list
    // changed, so the feed's subscriptions stay as they are otherwise.
    const read = () =>
      gql('{ customers(first: 500) { items { id } } }')
        .then((d) => {
          const ids = d.customers.items.map((c) => c.id);
          setCustomers((was) => (was && was.join(',') === ids.join(',') ? was : ids));
        })
        .catch(() => setCustomers((was) => was || []));
    read();
    const timer = setInterval(read, CUSTOMERS_AGAIN_MS);
    return () => clearInterval(timer);
  }, [me]);
  return customers;
}

export function AgendasView({ me, query, navigate, customers }) {
  const filter = useMemo(() => filterFromQuery(query), [JSON.stringify(query)]);
  const [page, setPage] = useState(null);
  // The pages walked so far, for this filter only: a filter changed by the address (a link,
  // Back/Forward) starts again at the first page, as one changed in the form does.
  const filterKey = JSON.stringify(filter);
  const [walked, setWalked] = useState({ key: filterKey, cursors: [null] });
  const cursors = walked.key === filterKey ? walked.cursors : [null];
  const setCursors = (list) => setWalked({ key: filterKey, cursors: list });
  const [error, setError] = useState(null);
  const [selected, setSelected] = useState(new Set());
  const [busy, setBusy] = useState('');
  const [tick, setTick] = useState(0);
  const after = cursors[cursors.length - 1];
  // The page shown must be the one fetched for this filter and cursor: a page of the previous
  // filter (live rows merged into it) would show rows this filter does not hold, or miss some.
  const pageKey = JSON.stringify([filter, after]);
  // The last state the page saw of each agenda (as `stateOf` reads it): an update tells
  // whether it entered the state filtered on. Bounded: past 20,000 agendas it starts again.
  const seenStates = useRef(new Map());
  const rememberStates = (list) => {
    const seen = seenStates.current;
    if (seen.size > 20000) seen.clear();
    for (const p of list) seen.set(p.customerId + '/' + p.agendaId, stateOf(p));
  };
  // The page fetched again at most twice a second however many agendas change, and never
  // while a read of it is on its way: that read ends first, then the next starts (dash9: on a
  // slow network each new read threw the last away, and no page ever came).
  const refetch = useRef({ timer: null, inFlight: false, wanted: false });
  const refetchSoon = () => {
    const r = refetch.current;
    if (r.inFlight) {
      r.wanted = true;
      return;
    }
    if (r.timer) return;
    r.timer = setTimeout(() => {
      r.timer = null;
      setTick((t) => t + 1);
    }, 500);
  };
  useEffect(() => () => clearTimeout(refetch.current.timer), []);

  useEffect(() => {
    let live = true;
    const t0 = performance.now();
    const r = refetch.current;
    r.inFlight = true;
    const done = () => {
      r.inFlight = false;
      if (r.wanted) {
        r.wanted = false;
        refetchSoon();
      }
    };
    gql(
      `query($f: AgendaFilter, $a: String) { agendaProgressList(filter: $f, first: ${PAGE}, after: $a) { items { ${PROGRESS_FIELDS} } endCursor hasNextPage position } }`,
      { f: filter, a: after },
    )
      .then((d) => {
        if (!live) return;
        window.__popFirstPageMs = performance.now() - t0;
        rememberStates(d.agendaProgressList.items);
        setPage({ ...d.agendaProgressList, key: pageKey });
        setError(null);
      })
      .catch((e) => live && setError(e))
      .finally(() => live && done());
    return () => {
      live = false;
      r.inFlight = false;
    };
  }, [filter, after, tick]);

  useAgendaFeed(
    customers,
    (items) =>
      setPage((pg) => {
        if (!pg || pg.key !== pageKey) return pg;
        const rows = pg.items.slice();
        const at = new Map(rows.map((r, i) => [r.customerId + '/' + r.agendaId, i]));
        // Newest first, an agenda added after the first page's top row belongs above it.
        const top = rows.length ? Date.parse(rows[0].addedTime) : -Infinity;
        const added = new Map();
        // An agenda that left the filter (a state filter) or entered it where only the server
        // can place it (an older one, rerun or retried) has the page fetched again (dash8: a
        // rerun agenda never showed under WAITING, succeeded ones stayed under EXECUTING).
        // Only an agenda whose state changed into the filtered one, and whose place is within
        // this page's span, does (review-s42: every change of an agenda of another page had
        // the page read twice a second).
        let stale = false;
        const addedAt = (x) => Date.parse(x.addedTime);
        const [first, last] = rows.length ? [addedAt(rows[0]), addedAt(rows[rows.length - 1])] : [null, null];
        const within = (when) => {
          if (!rows.length) return after === null;
          if (filter.newestFirst) return (after === null || when <= first) && (when >= last || !pg.hasNextPage);
          return (after === null || when >= first) && (when <= last || !pg.hasNextPage);
        };
        const seen = seenStates.current;
        for (const p of items) {
          const key = p.customerId + '/' + p.agendaId;
          const i = at.get(key);
          const fits = passes(filter, p);
          // By the state a person reads, item by item (dash11: failed → cancelled is COMPLETE
          // both times, and a batch of a rerun's updates ended where it began).
          const entered = Boolean(filter.processingState) && seen.get(key) !== stateOf(p);
          seen.set(key, stateOf(p));
          if (i !== undefined) {
            rows[i] = fits ? p : null;
            stale ||= !fits;
          } else if (added.has(key)) {
            // Entered above the top earlier in this batch: its latest word decides (dash9: one
            // that left again within the batch stayed).
            if (fits) added.set(key, p);
            else added.delete(key);
          } else if (!fits) {
            // not this filter's
          } else if (filter.newestFirst && after === null && addedAt(p) >= top) {
            added.set(key, p);
          } else if (!filter.newestFirst && !pg.hasNextPage && rows.length < PAGE) {
            at.set(key, rows.length);
            rows.push(p);
          } else if (entered && within(addedAt(p))) {
            stale = true;
          }
        }
        if (seen.size > 20000) seen.clear();
        if (stale) refetchSoon();
        const kept = rows.filter(Boolean);
        if (!added.size) return { ...pg, items: kept };
        // Those rows stay above the page's own until the next fetch (the cursor still follows
        // the page's last row); past two pages' worth, the page is fetched again.
        if (kept.length + added.size > 2 * PAGE) refetchSoon();
        const newest = [...added.values()].sort((a, b) => Date.parse(b.addedTime) - Date.parse(a.addedTime));
        return { ...pg, items: newest.concat(kept) };
      }),
    // Through the same guard (review-s42b: these threw away the read on its way too).
    () => refetchSoon(),
  );

  const set = (k, v) => {
    const q = { ...query, [k]: v };
    if (!v) delete q[k];
    setCursors([null]);
    navigate('agendas', q);
  };
  const toggle = (key) =>
    setSelected((s) => {
      const n = new Set(s);
      n.has(key) ? n.delete(key) : n.add(key);
      return n;
    });
  const current = page && page.key === pageKey;
  const rows = current ? page.items : [];
  const [confirming, setConfirming] = useState(false);
  const focus = useConfirmFocus(confirming, setConfirming);
  // A selection is of the rows on screen: another filter or page starts with none (dash12:
  // boxes ticked under one filter were cancelled or rerun from another, unseen).
  useEffect(() => {
    setSelected(new Set());
    setConfirming(false);
  }, [pageKey]);
  // What the actions act on: the selected rows still on screen (review-s44: a row a live
  // update took off the page stayed selected, unseen, and was counted and acted on).
  const shownKeys = new Set(rows.map((p) => JSON.stringify([p.customerId, p.agendaId])));
  const chosen = new Set([...selected].filter((k) => shownKeys.has(k)));
  // Every selected agenda is tried, whatever the others answer (newcomer13: in a retry storm
  // the first one that could not be cancelled stopped the loop, and the rest kept retrying);
  // those refused stay selected, and the error names how many and the first reason.
  const act = async (kind) => {
    setBusy(kind);
    setError(null);
    const refused = new Set();
    let first = null;
    for (const key of chosen) {
      const [customerId, agendaId] = JSON.parse(key);
      try {
        if (kind === 'cancel') {
          await gql('mutation($a: String!, $c: String) { cancelAgenda(agendaId: $a, customerId: $c, reason: "cancelled from the dashboard") { position } }', { a: agendaId, c: customerId });
        } else {
          await gql('mutation($a: String!, $c: String) { rerunAgenda(agendaId: $a, customerId: $c, params: ["resetAll"]) { position } }', { a: agendaId, c: customerId });
        }
      } catch (e) {
        refused.add(key);
        first = first || e;
      }
    }
    setSelected(refused);
    if (first) {
      const done = chosen.size - refused.size;
      first.message = `${refused.size} of ${chosen.size} not ${kind === 'cancel' ? 'cancelled' : 'rerun'} (${done} done; ${refused.size === 1 ? 'the refused one stays' : 'the refused ones stay'} selected); the first: ${first.message}`;
      setError(first);
    }
    setBusy('');
  };
  const canWrite = may(me, 'cancel') || may(me, 'rerun');

  return html`<section>
    <h1>Agendas</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>customer <input name="customer" value=${query.customer || ''} list="customers" onChange=${(e) => set('customer', e.target.value.trim())}/></label>
      <datalist id="customers">${(customers || []).map((c) => html`<option value=${c}/>`)}</datalist>
      <label>linkId <input name="linkId" value=${query.linkId || ''} onChange=${(e) => set('linkId', e.target.value.trim())}/></label>
      <label>insight <input name="insight" value=${query.insight || ''} onChange=${(e) => set('insight', e.target.value.trim())}/></label>
      <label>state <select name="state" value=${query.state || ''} onChange=${(e) => set('state', e.target.value)}>
        <option value="">any</option><option value="WAITING">WAITING</option><option value="EXECUTING">EXECUTING</option><option value="COMPLETE">COMPLETE</option>
        ${OUTCOMES.map((o) => html`<option value=${o}>COMPLETE · ${o.toLowerCase()}</option>`)}
      </select></label>
      <label>added from (UTC) <input name="from" type="datetime-local" value=${query.from || ''} onChange=${(e) => set('from', e.target.value)}/></label>
      <label>until (UTC) <input name="until" type="datetime-local" value=${query.until || ''} onChange=${(e) => set('until', e.target.value)}/></label>
      <label>order <select name="order" value=${query.order || ''} onChange=${(e) => set('order', e.target.value)}>
        <option value="">newest first</option><option value="oldest">oldest first</option>
      </select></label>
    </form>
    <${ErrorLine} error=${error}/>
    ${canWrite && html`<div class="actions">
      <span class="muted">${chosen.size} selected</span>
      ${may(me, 'cancel') && (confirming && chosen.size
        ? html`<span class="confirm" id="cancel-selected-confirm-box" onKeyDown=${focus.onKeyDown}>Cancel ${chosen.size} ${chosen.size === 1 ? 'agenda' : 'agendas'}?
            <button id="cancel-selected-confirm" class="danger" disabled=${busy} onClick=${() => { setConfirming(false); act('cancel'); }}>Yes, cancel</button>
            <button id="cancel-selected-keep" ref=${focus.keep} onClick=${() => setConfirming(false)}>Keep them</button></span>`
        : html`<button id="cancel-selected" ref=${focus.button} disabled=${!chosen.size || busy} onClick=${() => setConfirming(true)}>Cancel selected</button>`)}
      ${may(me, 'rerun') && html`<button id="rerun-selected" disabled=${!chosen.size || busy} onClick=${() => act('rerun')}>Rerun selected (resetAll)</button>`}
    </div>`}
    <table class="list" id="agenda-list" data-loading=${current ? 'false' : 'true'}>
      <thead><tr>${canWrite && html`<th></th>`}<th>agenda</th><th>customer</th><th>title</th><th>linkId</th><th>insight</th><th>state</th><th>progress</th><th>added</th><th>updated</th></tr></thead>
      <tbody>
        ${rows.map((p) => {
          const key = JSON.stringify([p.customerId, p.agendaId]);
          return html`<tr data-agenda=${p.agendaId} data-customer=${p.customerId} data-state=${stateOf(p)}>
            ${canWrite && html`<td><input type="checkbox" aria-label=${'select ' + p.agendaId} checked=${selected.has(key)} onChange=${() => toggle(key)}/></td>`}
            <td><a href=${agendaHref(p.customerId, p.agendaId)}>${p.agendaId}</a></td>
            <td class="ident">${p.customerId}</td><td class="title">${p.title || ''}</td>
            <td>${p.linkId ? html`<a href=${batchHref(p.customerId, p.linkId)}><${Key} text=${p.linkId}/></a>` : ''}</td>
            <td>${p.agendaInsight ? p.agendaInsight.insightId : ''}</td>
            <td><${StateBadge} p=${p}/> <span class="muted">${p.processingStateMessage || ''}</span></td>
            <td><${Bar} pct=${p.percentComplete} state=${stateOf(p)} of=${p.agendaId}/></td>
            <td>${fmtTime(p.addedTime)}</td><td>${fmtTime(p.updatedTime)}</td>
          </tr>`;
        })}
      </tbody>
    </table>
    ${current ? !rows.length && (page.hasNextPage
      // The server stops a page after looking at 20,000 agendas (hostile33: "No agendas match"
      // stood above an enabled Next while the matches were further on).
      ? html`<p class="muted" id="agenda-list-further">None on this page: the server looked at as many agendas as one page may and found none that match; Next looks further.</p>`
      : html`<p class="muted">No agendas match.</p>`) : !error && html`<p class="muted" id="agenda-list-loading">Loading…</p>`}
    <div class="pager">
      <button disabled=${cursors.length < 2} onClick=${() => setCursors(cursors.slice(0, -1))}>← Previous</button>
      <span class="muted">page ${cursors.length}</span>
      <button disabled=${!current || !page.hasNextPage} onClick=${() => setCursors([...cursors, page.endCursor])}>Next →</button>
    </div>
  </section>`;
}

// ---- One agenda ------------------------------------------------------------------------

const AGENDA_QUERY = `query($id: String!, $c: String) {
  agenda(id: $id, customerId: $c) { id customerId title linkId progressId addedTime updatedTime params
    operations { name type payload params dependsOn generatedBy } }
}`;

const OP_FIELDS = `operation processingState processingStateMessage percentComplete attemptCount startedTime attemptTime completedTime
  resultPayload diagnosticEvents { message statusCode time stackTrace payload }`;

export function AgendaView({ me, customerId, id }) {
  const [agenda, setAgenda] = useState(null);
  const [progress, setProgress] = useState(null);
  const [ops, setOps] = useState(new Map());
  // Whether the operations' follow answered yet: until then an operation without progress is
  // not known to be unstarted (dash13: a finished agenda's operations read "unstarted").
  const [opsRead, setOpsRead] = useState(false);
  const [error, setError] = useState(null);
  const [selected, setSelected] = useState(null);
  // Chosen in a drawing with tools (a click on a box, Find, Next): the page stays where it is,
  // the box under the pointer and focus on the tool (dash55 M1: the page scrolled to the
  // detail, hiding the box just chosen); the tools say what is selected and lead to the detail.
  const fromDrawing = useRef(false);
  const choose = useCallback((name, inDrawing) => {
    fromDrawing.current = Boolean(inDrawing);
    setSelected(name);
  }, []);
  // A selected operation's detail is brought into view (dash54: it opened below the fold, or
  // after 300 rows, with nothing to say it had).
  useEffect(() => {
    if (!selected) return;
    if (fromDrawing.current) {
      fromDrawing.current = false;
      return;
    }
    const detail = document.getElementById('op-detail');
    if (detail) {
      detail.scrollIntoView({ block: 'nearest' });
      detail.focus({ preventScroll: true });
    }
  }, [selected]);
  const [tick, setTick] = useState(0);
  // Above LARGE operations the table repeats the DAG; it is drawn on request only.
  const [showTable, setShowTable] = useState(false);

  const missing = useRef(false);
  const looks = useRef(0);
  const load = useCallback(async () => {
    try {
      const d = await gql(AGENDA_QUERY, { id, c: customerId });
      if (!d.agenda) {
        missing.current = true;
        setError(new GqlError([{ message: `no agenda ${id} of ${customerId} is visible to you`, extensions: { code: 'NOT_FOUND', cid: d.cid } }]));
        return false;
      }
      if (missing.current) setError(null);
      missing.current = false;
      setAgenda(d.agenda);
    } catch (e) {
      setError(e);
    }
    return true;
  }, [id, customerId]);
  useEffect(() => {
    // A link opened before its agenda was submitted finds it once it is (dash10: it said
    // NOT_FOUND until a reload while the agenda ran and ended).
    let timer = null;
    let live = true;
    load().then((found) => {
      // Every 2 s at first, then less often (a mistyped id is not looked for every 2 s for
      // as long as its page stays open: dash11).
      looks.current = found ? 0 : looks.current + 1;
      const wait = Math.min(NOT_FOUND_AGAIN_MAX_MS, NOT_FOUND_AGAIN_MS * 2 ** Math.max(0, looks.current - 5));
      if (live && !found) timer = setTimeout(() => setTick((t) => t + 1), wait);
    });
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [load, tick]);

  // The agenda's own progress (state, message, diagnostics) and its operations', live.
  useEffect(() => {
    if (!agenda) return undefined;
    const onProgress = perFrame((items) => {
      if (items.some((u) => u.lagged)) setTick((t) => t + 1);
      const last = items.filter((u) => u.progress).pop();
      if (last) setProgress(last.progress);
    }, LIVE_MS);
    const onOps = perFrame((items) => {
      // For the benchmark (bench/dashboard.sh): how many operation updates the page applied.
      window.__popStats = window.__popStats || { operationUpdates: 0 };
      window.__popStats.operationUpdates += items.length;
      setOpsRead(true);
      if (items.some((u) => u.operationProgress.some((o) => !agendaHas(agenda, o.operation)) || u.removedOperations.length)) {
        // Generated operations came or went: the agenda body changed.
        load();
      }
      setOps((m) => {
        const n = new Map(m);
        for (const u of items) {
          for (const o of u.operationProgress) n.set(o.operation, o);
          for (const r of u.removedOperations) n.delete(r);
        }
        return n;
      });
    }, LIVE_MS);
    // Both follows name the agenda's customer: ids are chosen per customer, and another
    // tenant's agenda of the same id must not reach this page.
    const off1 = subscribe(
      `subscription($id: String!, $c: String) { agendaProgress(id: $id, customerId: $c) { lagged resync removed progress { ${PROGRESS_FIELDS} attemptsCompleted maximumAttempts retryDue retryDueTime
        diagnosticEvents { message statusCode time stackTrace payload } } } }`,
      { id: progressIdOf(agenda), c: agenda.customerId },
      (d) => onProgress(d.agendaProgress),
      setError,
    );
    const off2 = subscribe(
      `subscription($id: String!, $c: String) { operationProgress(agendaId: $id, customerId: $c) { lagged resync removedOperations operationProgress { ${OP_FIELDS} } } }`,
      { id: agenda.id, c: agenda.customerId },
      (d) => onOps(d.operationProgress),
      setError,
    );
    // After a dropped connection the follows start again from the current state; re-read
    // the agenda too (its operations may have been expanded meanwhile).
    const off3 = onReconnect(() => setTick((t) => t + 1));
    return () => {
      off1();
      off2();
      off3();
    };
  }, [agenda && agenda.id, agenda && agenda.customerId, agenda && agenda.operations.length]);

  // One state object per operation progress object (kept while the progress is unchanged),
  // so the DAG re-renders only the nodes a report touched.
  const stateCache = useRef(new WeakMap());
  const states = useMemo(() => {
    const m = new Map();
    // Until the operations' follow answers, an operation without progress is being read, not
    // unstarted (dash55 L1: a running agenda's 501 boxes were drawn unstarted for 270 ms).
    if (!opsRead && agenda) for (const op of agenda.operations) m.set(op.name, LOADING);
    for (const [name, o] of ops) {
      let st = stateCache.current.get(o);
      if (!st) {
        st = { state: stateOf(o), percent: o.percentComplete, message: o.processingStateMessage || '' };
        stateCache.current.set(o, st);
      }
      m.set(name, st);
    }
    return m;
  }, [ops, opsRead, agenda]);

  if (!agenda) return html`<section><h1>Agenda ${id}</h1><${ErrorLine} error=${error}/>${!error && html`<p class="muted">Loading…</p>`}</section>`;
  const canWrite = may(me, 'cancel') || may(me, 'rerun');
  // Until the agenda's follow answers, its state is being read, not "unknown", and nothing is
  // offered on it (dash13: a succeeded agenda showed Cancel, asking about running operations).
  const st = progress ? stateOf(progress) : 'loading';
  const large = agenda.operations.length > LARGE;
  const sel = selected && ops.get(selected);
  // The failed operations, first in the agenda's order, with the reason of the first: what an
  // operator looks for on a failed agenda (dash54: on 300 operations it was behind a button,
  // a table without a filter and a detail below the fold).
  const failed = agenda.operations.filter((op) => stateOf(ops.get(op.name)) === 'failed').map((op) => op.name);
  const retrying = st === 'failed' && progress && progress.retryDue;
  return html`<section class="agenda" data-agenda=${agenda.id}>
    <h1>Agenda ${agenda.id} <${StateBadge} state=${st}/></h1>
    <p class="meta">customer <b>${agenda.customerId}</b>${agenda.title ? html` · ${agenda.title}` : ''}${agenda.linkId ? html` · batch <a href=${batchHref(agenda.customerId, agenda.linkId)}><${Key} text=${agenda.linkId}/></a>` : ''}${' · added '}${fmtTime(agenda.addedTime)}${progress ? html` · ${progress.processingStateMessage || ''} · <${Bar} pct=${progress.percentComplete} state=${st} of=${'agenda ' + agenda.id}/> ${Math.round(progress.percentComplete || 0)}%` : ''}
      ${progress && progress.maximumAttempts ? html` · attempts ${progress.attemptsCompleted}/${progress.maximumAttempts}` : ''}${retrying ? html` · <b id="retry-due">a retry follows${progress.retryDueTime ? html` at <time datetime=${progress.retryDueTime}>${fmtTime(progress.retryDueTime)}</time>` : ''}</b> (attempt ${progress.attemptsCompleted + 1} of ${progress.maximumAttempts})` : ''}<${Holding} agenda=${agenda} state=${st}/></p>
    ${failed.length > 0 && html`<p class="failed-ops" id="failed-ops"><b>${failed.length} failed:</b> ${failed.slice(0, 5).map((name, i) => html`${i ? ', ' : ''}<button class="link" data-op=${name} onClick=${() => choose(name)}>${name}</button>`)}${failed.length > 5 ? ` and ${failed.length - 5} more` : ''} — <span class="reason">${messageOf(ops.get(failed[0]))}</span></p>`}
    <${ErrorLine} error=${error}/>
    ${canWrite && progress && html`<${Actions} me=${me} agenda=${agenda} state=${st} parked=${st === 'waiting' && (progress.processingStateMessage || '').toLowerCase() === 'pending'} retryDue=${Boolean(progress && progress.retryDue)} onError=${setError} operations=${agenda.operations.map((o) => o.name)}/>`}
    <h2>Operations <span class="muted">(${agenda.operations.length}${agenda.operations.length > LARGE ? ', layered layout' : ''})</span></h2>
    <${Dag} operations=${agenda.operations} progress=${[...ops.values()]} states=${states} selected=${selected} onSelect=${choose}/>
    ${large && html`<p><button id="show-op-table" onClick=${() => setShowTable(!showTable)}>${showTable ? 'Hide' : 'Show'} the table of ${agenda.operations.length} operations</button></p>`}
    <table class="list ops" id="op-list">
      <thead><tr><th>operation</th><th>type</th><th>state</th><th>progress</th><th>message</th><th>attempts</th><th>started</th><th>completed</th></tr></thead>
      <tbody>${(large && !showTable ? [] : agenda.operations.slice(0, 1000)).map((op) => html`<${OpRow} key=${op.name} op=${op} o=${ops.get(op.name)} read=${opsRead} selected=${selected === op.name} onSelect=${choose}/>`)}</tbody>
    </table>
    ${sel && html`<div class="detail" id="op-detail" tabindex="-1"><h3>${selected}</h3>
      <${Diagnostics} events=${sel.diagnosticEvents}/>
      <h4>Result payload</h4><pre class="json">${JSON.stringify(sel.resultPayload, null, 2)}</pre></div>`}
    ${progress && progress.diagnosticEvents && progress.diagnosticEvents.length ? html`<h2>Agenda diagnostics</h2><${Diagnostics} events=${progress.diagnosticEvents}/>` : ''}
    <${Results} ops=${ops}/>
    <${Timeline} agenda=${agenda} tick=${progress && progress.updatedTime}/>
  </section>`;
}

/// One operation's row; re-rendered only when its progress or selection changed.
class OpRow extends Component {
  shouldComponentUpdate(next) {
    const a = this.props;
    return a.o !== next.o || a.op !== next.op || a.selected !== next.selected || a.read !== next.read;
  }

  render({ op, o, read, selected, onSelect }) {
    const s = o ? stateOf(o) : read ? 'unstarted' : 'loading';
    // Reached and opened from the keyboard too (dash9: only a mouse opened an operation).
    const open = (e) => {
      if (e.key !== 'Enter' && e.key !== ' ') return;
      e.preventDefault();
      onSelect(op.name);
    };
    return html`<tr data-op=${op.name} data-state=${s} class=${selected ? 'selected' : ''} tabindex="0" aria-selected=${selected ? 'true' : 'false'} onClick=${() => onSelect(op.name)} onKeyDown=${open}>
      <td class="ident">${op.name}${op.generatedBy ? html` <span class="muted">← ${op.generatedBy}</span>` : ''}</td><td class="ident">${op.type}</td>
      <td><${StateBadge} state=${s}/></td><td><${Bar} pct=${o && o.percentComplete} state=${s} of=${op.name}/> <span class="pct">${o && o.percentComplete != null ? Math.round(o.percentComplete) + '%' : ''}</span></td>
      <td class="message">${o ? messageOf(o) : ''}</td><td>${o ? o.attemptCount : ''}</td>
      <td>${fmtTime(runStarted(o))}</td><td>${fmtTime(o && o.completedTime)}</td></tr>`;
  }
}

/// When the operation's current run started: none while it waits (reset by a rerun it kept its
/// first run's start, shown as if it ran: newcomer61 L5), else its latest start.
function runStarted(o) {
  if (!o || o.processingState === 'WAITING') return null;
  return o.attemptTime || o.startedTime;
}

/// Characters of a message the operations table shows: a failure's reason may be 32 KiB
/// (dash14: one without spaces made the page 167,601 px wide); the whole of it is in the
/// operation's diagnostics, opened from its row.
const ROW_MESSAGE_CHARS = 300;

/// An operation's message, with the reason of a failure (its last diagnostic) beside it: the
/// first thing a user looks for, as `pop progress` prints it; cut to [`ROW_MESSAGE_CHARS`].
function messageOf(o) {
  const message = o.processingStateMessage || '';
  const events = o.diagnosticEvents || [];
  const failed = /^failed$/i.test(message) && events.length;
  const line = failed ? `${message}: ${events[events.length - 1].message}` : message;
  // By characters, not UTF-16 units: a cut never splits one (an emoji's two halves).
  const chars = Array.from(line);
  return chars.length > ROW_MESSAGE_CHARS ? chars.slice(0, ROW_MESSAGE_CHARS - 1).join('') + '…' : line;
}

function agendaHas(agenda, name) {
  return agenda.operations.some((o) => o.name === name);
}

/// Who holds the agenda's lease and until when, while it is not complete (ops3am17: a dead
/// worker's agenda looked like a slow one; only the history's stopped reports told). Read
/// when the state changes and every 5 s, not per report.
function Holding({ agenda, state }) {
  const [holding, setHolding] = useState(null);
  const open = state === 'waiting' || state === 'executing';
  useEffect(() => {
    if (!open) {
      setHolding(null);
      return undefined;
    }
    let stopped = false;
    const load = () => gql(
      'query($id: String!, $c: String) { agendaHolding(id: $id, customerId: $c) { holder expires expiresInMs } }',
      { id: progressIdOf(agenda), c: agenda.customerId },
    ).then((d) => { if (!stopped) setHolding(d.agendaHolding && { ...d.agendaHolding, at: performance.now() }); }).catch(() => {});
    load();
    const timer = setInterval(load, 5000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [agenda.id, agenda.customerId, open, state]);
  // Counted down here between two reads (dash8: a 5 s old figure lagged, and even rose).
  const [, setSecond] = useState(0);
  const counting = holding && holding.expiresInMs > 0;
  useEffect(() => {
    if (!counting) return undefined;
    const timer = setInterval(() => setSecond((n) => n + 1), 1000);
    return () => clearInterval(timer);
  }, [counting]);
  if (!holding) return null;
  const left = holding.expiresInMs - (performance.now() - holding.at);
  const when = left > 0
    ? `its lease ends in ${Math.ceil(left / 1000)} s`
    : `its lease ended ${fmtTime(holding.expires)} without a report reaching the server (the holder is gone, or cannot report)`;
  return html`<span id="holding"> · held by <b>${holding.holder}</b>: ${when}</span>`;
}

function progressIdOf(agenda) {
  return agenda.progressId || agenda.id;
}

function Diagnostics({ events }) {
  if (!events || !events.length) return html`<p class="muted">No diagnostics.</p>`;
  return html`<ul class="diagnostics">${events.map(
    (d) => html`<li><span class="muted">${fmtTime(d.time)}</span> ${d.statusCode ? html`<b>${d.statusCode}</b> ` : ''}<span class="diag-message">${d.message}</span>
      ${d.stackTrace ? html`<pre class="trace">${d.stackTrace}</pre>` : ''}
      ${d.payload && Object.keys(d.payload).length ? html`<pre class="json">${JSON.stringify(d.payload, null, 2)}</pre>` : ''}</li>`,
  )}</ul>`;
}

function Results({ ops }) {
  const done = [...ops.values()].filter((o) => o.resultPayload && (typeof o.resultPayload !== 'object' || Object.keys(o.resultPayload).length));
  if (!done.length) return null;
  const entries = done.map((o) => html`<${Lazy} key=${o.operation} label=${o.operation} value=${o.resultPayload}/>`);
  if (done.length <= RESULTS_SHOWN) return html`<h2>Results</h2>${entries}`;
  // Many are one fold, passed with one Tab (dash14: 612 to reach the history of a
  // 600-operation agenda).
  return html`<h2>Results</h2><details class="results"><summary>${done.length} results: open to list them</summary>${entries}</details>`;
}

/// Results listed as they are; more are folded into one `<details>`.
const RESULTS_SHOWN = 20;

function Actions({ me, agenda, state, parked, retryDue, operations, onError }) {
  const [mode, setMode] = useState('resetAll');
  const [reset, setReset] = useState(new Set());
  const [busy, setBusy] = useState(false);
  const complete = ['succeeded', 'failed', 'cancelled', 'complete'].includes(state);
  // A failed agenda with attempts left may be cancelled: that withdraws its retry (ops3am13).
  const cancellable = !complete || retryDue;
  // WAITING/pending: a skipExecution rerun left it out of every queue; a rerun starts it.
  const rerunnable = complete || parked;
  const run = async (fn) => {
    setBusy(true);
    onError(null);
    try {
      await fn();
    } catch (e) {
      onError(e);
    }
    setBusy(false);
  };
  const [confirming, setConfirming] = useState(false);
  // Above CHOOSE_ALL_UP_TO operations the list to choose from is filtered by name and shows at
  // most CHOOSE_SHOWN of them, the chosen first (dash55 L3: 501 checkboxes, 886 px tall).
  const [filter, setFilter] = useState('');
  const wanted = filter.trim().toLowerCase();
  const matching = operations.filter((n) => !wanted || n.toLowerCase().includes(wanted));
  const shown = operations.length > CHOOSE_ALL_UP_TO
    ? [...matching.filter((n) => reset.has(n)), ...matching.filter((n) => !reset.has(n))].slice(0, CHOOSE_SHOWN)
    : operations;
  const focus = useConfirmFocus(confirming, setConfirming);
  const cancel = () =>
    run(() => gql('mutation($a: String!, $c: String) { cancelAgenda(agendaId: $a, customerId: $c, reason: "cancelled from the dashboard") { position } }', { a: agenda.id, c: agenda.customerId }));
  const rerun = () => {
    const params = mode === 'reset' ? ['operationsToReset=' + [...reset].join(',')] : [mode];
    return run(() => gql('mutation($a: String!, $c: String, $p: [String!]) { rerunAgenda(agendaId: $a, customerId: $c, params: $p) { position } }', { a: agenda.id, c: agenda.customerId, p: params }));
  };
  return html`<div class="actions">
    ${may(me, 'cancel') && (confirming && cancellable
      ? html`<span class="confirm" id="cancel-confirm-box" onKeyDown=${focus.onKeyDown}>${retryDue
          ? 'Cancel this agenda? Its retry is withdrawn and it ends cancelled.'
          : 'Cancel this agenda? Its running operations stop being reported.'}
          <button id="cancel-confirm" class="danger" disabled=${busy} onClick=${() => { setConfirming(false); cancel(); }}>Yes, cancel it</button>
          <button id="cancel-keep" ref=${focus.keep} onClick=${() => setConfirming(false)}>Keep it</button></span>`
      : html`<button id="cancel-agenda" ref=${focus.button} disabled=${busy || !cancellable} title=${retryDue ? 'failed, its retry still to come: cancelling withdraws the retry' : ''} onClick=${() => setConfirming(true)}>${retryDue ? 'Cancel retry' : 'Cancel'}</button>`)}
    ${may(me, 'rerun') && html`<span class="sep"></span><label>rerun <select id="rerun-mode" value=${mode} onChange=${(e) => setMode(e.target.value)}>
      <option value="resetAll">resetAll</option><option value="continue">continue</option><option value="reset">reset chosen operations</option></select></label>
    ${mode === 'reset' && html`<span class="choose">${operations.length > CHOOSE_ALL_UP_TO && html`<input id="reset-filter" type="search" placeholder="Filter operations" aria-label="filter the operations to reset" value=${filter} onInput=${(e) => setFilter(e.target.value)}/> <span class="muted" id="reset-shown">${reset.size} chosen${shown.length < matching.length ? `; ${shown.length} of ${matching.length} shown: filter to see the rest` : ''}</span> `}${shown.map((n) => html`<label><input type="checkbox" checked=${reset.has(n)} onChange=${() => {
      const s = new Set(reset);
      s.has(n) ? s.delete(n) : s.add(n);
      setReset(s);
    }}/>${n}</label>`)}</span>`}
    <button id="rerun-agenda" disabled=${busy || !rerunnable || (mode === 'reset' && !reset.size)} onClick=${rerun}>Rerun</button>`}
  </div>`;
}

/// Up to how many operations a rerun of chosen ones lists them all; past it, at most how many.
const CHOOSE_ALL_UP_TO = 30;
const CHOOSE_SHOWN = 30;

/// The history's row height (px, fixed by app.css) and how many rows beyond the visible ones
/// are drawn on each side.
const EVENT_ROW = 28;
const OVERSCAN = 8;

/// One event of the history; an event never changes, so it is rendered once.
class EventRow extends Component {
  shouldComponentUpdate(next) {
    return next.e !== this.props.e || next.open !== this.props.open;
  }

  render({ e, open, onOpen }) {
    return html`<tr data-type=${e.type} data-version=${e.version} class=${open ? 'selected' : ''}>
      <td title=${fmtTime(e.time)}>${fmtTime(e.time)}</td><td>${e.version}</td><td>${e.type}</td>
      <td>${(e.metadata && e.metadata.actor) || ''}</td>
      <td class="mono">${(e.metadata && e.metadata.cid) || ''}</td>
      <td><button class="link" onClick=${() => onOpen(open ? null : e.version)}>${open ? 'hide' : 'data'}</button></td></tr>`;
  }
}

/// A `details` whose JSON is rendered only once opened.
function Lazy({ value, label = 'data' }) {
  const [open, setOpen] = useState(false);
  return html`<details onToggle=${(e) => setOpen(e.target.open)}><summary>${label}</summary>${open ? html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>` : ''}</details>`;
}

const FAILURE_TYPES = /fail|cancel|timed|error|reject|reap|reclaim|diagnostic/i;

function Timeline({ agenda, tick }) {
  const [events, setEvents] = useState([]);
  // Whether the first read answered ("0 of 0 events" read as an empty history meanwhile).
  const [read, setRead] = useState(false);
  const [error, setError] = useState(null);
  const [type, setType] = useState('');
  const [failuresOnly, setFailuresOnly] = useState(false);
  // Reads only the events after the last one it has; one read at a time, and one more after
  // it when the agenda changed meanwhile (so a burst of changes costs a few reads, not one each).
  const state = useRef({ after: null, running: false, again: false, live: true });
  useEffect(() => {
    const st = state.current;
    st.live = true;
    const pull = async () => {
      // At most one read a second: under a stream of reports the history grows by hundreds
      // of events a second, and re-reading it per report would starve the page.
      const since = Date.now() - (st.lastPull || 0);
      if (!st.running && since < 1000) {
        if (!st.timer) st.timer = setTimeout(() => ((st.timer = null), pull()), 1000 - since);
        return;
      }
      st.lastPull = Date.now();
      if (st.running) {
        st.again = true;
        return;
      }
      st.running = true;
      try {
        do {
          st.again = false;
          for (let i = 0; i < 50; i++) {
            const d = await gql(
              'query($a: String!, $c: String, $after: String) { agendaEvents(agendaId: $a, customerId: $c, after: $after, first: 200) { items { type version position time data metadata } endCursor hasNextPage } }',
              { a: agenda.id, c: agenda.customerId, after: st.after },
            );
            if (!st.live || !d.agendaEvents) return;
            setRead(true);
            const page = d.agendaEvents;
            if (page.items.length) setEvents((old) => old.concat(page.items));
            if (page.endCursor) st.after = page.endCursor;
            if (!page.hasNextPage) break;
          }
        } while (st.again && st.live);
      } catch (e) {
        if (st.live) setError(e);
      } finally {
        st.running = false;
      }
    };
    pull();
    return () => {
      st.live = false;
      if (st.timer) clearTimeout(st.timer);
      st.timer = null;
    };
  }, [agenda.id, agenda.customerId, tick]);
  const types = useMemo(() => [...new Set(events.map((e) => e.type))].sort(), [events]);
  const shown = useMemo(() => {
    // An event is about a failure by its type, its own state or message, or an operation it
    // reports failed (the report that carries the operation's reason).
    const failedOperation = (e) => ((e.data && e.data.operationProgress) || [])
      .some((o) => /fail|cancel/i.test(`${o.processingStateMessage || ''}`));
    const isFailure = (e) => FAILURE_TYPES.test(e.type) || failedOperation(e) || /fail|cancel/i.test(JSON.stringify((e.data && (e.data.processingState || e.data.processingStateMessage || e.data.message)) || ''));
    return events.filter((e) => (!type || e.type === type) && (!failuresOnly || isFailure(e)));
  }, [events, type, failuresOnly]);
  const [open, setOpen] = useState(null);
  const opened = open == null ? null : events.find((e) => e.version === open);
  return html`<h2>History <span class="muted" id="history-count">(${read ? `${shown.length} of ${events.length} events` : 'reading…'})</span></h2>
    <div class="filters">
      <label>type <select id="event-type" value=${type} onChange=${(e) => setType(e.target.value)}><option value="">all</option>${types.map((t) => html`<option value=${t}>${t}</option>`)}</select></label>
      <label><input id="failures-only" type="checkbox" checked=${failuresOnly} onChange=${(e) => setFailuresOnly(e.target.checked)}/> failures only</label>
    </div>
    <${ErrorLine} error=${error}/>
    <${EventList} events=${shown} open=${open} onOpen=${setOpen}/>
    ${opened && html`<div class="detail" id="event-detail"><h3>Event ${opened.version}: ${opened.type}</h3><pre class="json">${JSON.stringify({ data: opened.data, metadata: opened.metadata, position: opened.position }, null, 2)}</pre></div>`}`;
}

/// The history as a virtual list: a scrolling box of fixed-height rows of which only those in
/// view (and OVERSCAN more each side) are in the DOM, so a history of thousands of events
/// costs the same per frame as one of thirty. It follows the newest events while scrolled to
/// the bottom (where it starts), and stays put while a person reads further up.
function EventList({ events, open, onOpen }) {
  const box = useRef(null);
  const [view, setView] = useState({ top: 0, height: 0 });
  const follow = useRef(true);
  const frame = useRef(0);
  const measure = () => {
    frame.current = 0;
    const b = box.current;
    if (!b) return;
    follow.current = b.scrollTop + b.clientHeight >= b.scrollHeight - EVENT_ROW;
    setView((v) => (v.top === b.scrollTop && v.height === b.clientHeight ? v : { top: b.scrollTop, height: b.clientHeight }));
  };
  const onScroll = () => {
    if (!frame.current) frame.current = requestAnimationFrame(measure);
  };
  useEffect(() => () => frame.current && cancelAnimationFrame(frame.current), []);
  // New events while following: stay at the bottom (after the rows are in the DOM).
  useLayoutEffect(() => {
    const b = box.current;
    if (!b) return;
    if (follow.current && b.scrollTop + b.clientHeight < b.scrollHeight) b.scrollTop = b.scrollHeight;
    if (view.top !== b.scrollTop || view.height !== b.clientHeight) setView({ top: b.scrollTop, height: b.clientHeight });
  }, [events.length]);
  const height = view.height || 12 * EVENT_ROW;
  const first = Math.max(0, Math.floor(view.top / EVENT_ROW) - OVERSCAN);
  const last = Math.min(events.length, Math.ceil((view.top + height) / EVENT_ROW) + OVERSCAN);
  const rows = events.slice(first, last);
  return html`<div class="timeline-wrap" ref=${box} onScroll=${onScroll} data-events=${events.length} data-first=${first}>
    <table class="list timeline" id="timeline"><thead><tr><th>time</th><th>#</th><th>type</th><th>who</th><th>cid</th><th>details</th></tr></thead>
    <tbody>
      ${first > 0 && html`<tr class="spacer" style=${'height:' + first * EVENT_ROW + 'px'}><td colspan="6"></td></tr>`}
      ${rows.map((e) => html`<${EventRow} key=${e.version} e=${e} open=${open === e.version} onOpen=${onOpen}/>`)}
      ${last < events.length && html`<tr class="spacer" style=${'height:' + (events.length - last) * EVENT_ROW + 'px'}><td colspan="6"></td></tr>`}
    </tbody></table></div>`;
}

// The dashboard's one way to the server: GraphQL over HTTP (queries, mutations) and
// graphql-transport-ws (subscriptions, through the vendored reference client), both with the
// bearer token the person signed in with. The token lives in sessionStorage: it survives
// reloads of this tab and is gone when the tab is closed or the person signs out.

const TOKEN_KEY = 'pop.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  // GraphiQL's history and tabs (this tab's sessionStorage) go with a sign-out: queries run
  // with one token are not left for whoever signs in next (dash58 M1).
  if (!t) {
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const k = sessionStorage.key(i);
      if (k && k.startsWith('graphiql:')) sessionStorage.removeItem(k);
    }
  }
  // A link's offer not taken goes with any sign-in or sign-out (review55 L1: it came back on
  // the sign-in page after a sign-out, on a tab someone else may use next).
  if (offered) setOffer('');
  closeSocket();
}

/// A sign-in link's token the person has not accepted yet: a tab signed in with none shows whom
/// it signs in as and asks (hostile55 L1: a link made by another tenant signed a fresh tab in as
/// them, quietly, and what the person then ran went to that tenant).
let offered = '';
const offerListeners = new Set();

export function offeredToken() {
  return offered;
}

/// Offers `t` (or withdraws the offer: `''`) to the sign-in page.
export function setOffer(t) {
  offered = t;
  offerListeners.forEach((fn) => fn(t));
}

export function onOffer(fn) {
  offerListeners.add(fn);
  return () => offerListeners.delete(fn);
}

/// Takes a token from the URL fragment (`#token=…`, what `pop serve` prints on its first
/// start) and removes it from the address bar and the history. A tab signed in with none is
/// offered it (`offeredToken`: the sign-in page names whom it signs in as and asks); a tab
/// signed in with another token asks first: a link someone else made would otherwise sign it
/// in as them, quietly (hostile21). True when it signed the tab in.
export function adoptFragmentToken() {
  const m = /^#token=([^&]+)/.exec(location.hash);
  if (!m) return false;
  const given = decodeURIComponent(m[1]);
  history.replaceState(null, '', location.pathname + '#/');
  const current = token();
  if (!current) {
    setOffer(given);
    return false;
  }
  if (current !== given && !confirm('This link signs this tab in with another token than the one it is signed in with. Sign in with the link\'s token? (Cancel keeps the one signed in.)')) {
    return false;
  }
  setToken(given);
  return true;
}

export class GqlError extends Error {
  constructor(errors) {
    const first = errors[0] || {};
    const ext = first.extensions || {};
    super(first.message || 'request failed');
    this.code = ext.code || 'ERROR';
    this.cid = ext.cid || '';
    this.errors = errors;
  }
}

// Whether the server answers. A failed fetch or a dropped subscription socket marks it down;
// then /healthz is probed every PROBE_MS until it answers, and the shell re-reads the page
// (onConnection). A token the server refuses (401 over HTTP, 4401/4403 on the socket) while
// signed in signs out with the reason (onSignedOut): it was revoked or the server's tokens
// changed.
const PROBE_MS = 2000;
let online = true;
let probing = false;
const connectionListeners = new Set();
const signedOutListeners = new Set();

/// Calls `fn(up)` when the server stops or starts answering. Returns the function that stops it.
export function onConnection(fn) {
  connectionListeners.add(fn);
  return () => connectionListeners.delete(fn);
}

/// Calls `fn(error)` when the server refuses the token (the shell signs out if it had signed
/// in with it; a token being tried at sign-in is refused by its own check). Returns the
/// function that stops it.
export function onSignedOut(fn) {
  signedOutListeners.add(fn);
  return () => signedOutListeners.delete(fn);
}

function setOnline(up) {
  if (online === up) return;
  online = up;
  connectionListeners.forEach((fn) => fn(up));
  if (!up) probe();
}

async function probe() {
  if (probing) return;
  probing = true;
  while (!online) {
    await new Promise((r) => setTimeout(r, PROBE_MS));
    try {
      const res = await fetch('/healthz', { cache: 'no-store' });
      if (res.ok) setOnline(true);
    } catch (e) {
      // Still down.
    }
  }
  probing = false;
}

/// How often a signed-in page asks `/readyz` whether the server can do its work.
const READY_MS = 5000;
let notReady = null;
let readyTimer = 0;
const readinessListeners = new Set();

async function checkReady() {
  let why = null;
  try {
    const res = await fetch('/readyz', { cache: 'no-store' });
    if (res.status === 503) why = (await res.text()).trim() || 'the server says it is not ready';
  } catch (e) {
    // Not answering at all: the offline banner says that.
  }
  if (why === notReady) return;
  notReady = why;
  readinessListeners.forEach((fn) => fn(why));
}

/// Calls `fn(why)` with why the server says it is not ready (`/readyz` 503: its store's disk
/// full or its file damaged, projections catching up), or `null` once it is again. A server
/// that answers but cannot write looked healthy on the page (newcomer55 M1). Returns the
/// function that stops it.
export function onReadiness(fn) {
  readinessListeners.add(fn);
  if (!readyTimer) {
    checkReady();
    readyTimer = setInterval(checkReady, READY_MS);
  }
  return () => {
    readinessListeners.delete(fn);
    if (!readinessListeners.size) {
      clearInterval(readyTimer);
      readyTimer = 0;
    }
  };
}

function refused(message) {
  const error = new GqlError([{ message, extensions: { code: 'UNAUTHENTICATED' } }]);
  signedOutListeners.forEach((fn) => fn(error));
  return error;
}

const REFUSED = 'the server no longer accepts this token (it was revoked, or the server\'s tokens changed): sign in again';

/// Runs a query or mutation; resolves to `data`, rejects with a GqlError.
export async function gql(query, variables = {}, as = '') {
  const sent = as || token();
  let res;
  try {
    res = await fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' + sent },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    setOnline(false);
    throw new GqlError([{ message: 'cannot reach the server (stopped or restarting?); this page reloads when it answers again', extensions: { code: 'OFFLINE' } }]);
  }
  setOnline(true);
  // The caller is told the same as the sign-in page (dash8: the server's generic text,
  // caught after the sign-out, replaced this one there).
  if (res.status === 401 && sent && sent === token()) throw refused(REFUSED);
  let body;
  try {
    body = await res.json();
  } catch (e) {
    throw new GqlError([{ message: `HTTP ${res.status}`, extensions: { code: 'HTTP' } }]);
  }
  if (body.errors && body.errors.length) throw new GqlError(body.errors);
  // The request's correlation id rides with its data (not enumerated): an answer of nothing
  // the page reports as an error (an agenda not visible) names it as the server's errors do
  // (newcomer61 L4).
  const data = body.data || {};
  Object.defineProperty(data, 'cid', { value: res.headers.get('x-correlation-id') || '', enumerable: false });
  return data;
}

let client = null;
const reconnectListeners = new Set();

/// Calls `fn` each time the subscription socket connects again after a drop: whatever changed
/// meanwhile was not delivered, so views re-read. Returns the function that stops it.
export function onReconnect(fn) {
  reconnectListeners.add(fn);
  return () => reconnectListeners.delete(fn);
}

/// How long the socket waits for the server's pong to its ping before it takes the link for
/// dead and connects again (dash12: a link that died without closing froze every page, which
/// kept showing old states with no banner, for as long as the tab stayed open).
const PONG_WITHIN_MS = 6000;

/// The longest pause between two tries to connect again, whatever the number of tries
/// (dash12: the reference client doubles it every try, so after a minute's outage live
/// updates stayed off 40–50 s after the server was back).
const MOST_RETRY_WAIT_MS = 4000;

function socket() {
  if (client) return client;
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/graphql/ws';
  let open = null;
  let pongDue = null;
  const made = window.graphqlWs.createClient({
    url,
    connectionParams: () => ({ authorization: 'Bearer ' + token() }),
    lazy: true,
    keepAlive: 10000,
    retryAttempts: Infinity,
    retryWait: (tries) =>
      new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** tries, MOST_RETRY_WAIT_MS) + Math.random() * 500)),
    // A refused token (4403) is not retried: the person has to sign in again.
    shouldRetry: (e) => !(e && e.code === 4403),
    on: {
      opened: (ws) => {
        open = ws;
      },
      // The client pings every `keepAlive`; no pong in time is a dead link: closed, so the
      // client connects again (and the views re-read what they missed).
      ping: (received) => {
        if (received) return;
        clearTimeout(pongDue);
        pongDue = setTimeout(() => {
          // terminate, not close: a close handshake over a dead link never ends, and the
          // client would wait for it.
          if (open && open.readyState === WebSocket.OPEN && made === client) {
            setOnline(false);
            made.terminate();
          }
        }, PONG_WITHIN_MS);
      },
      pong: (received) => {
        if (received) clearTimeout(pongDue);
      },
      connected: (_socket, _payload, wasRetry) => {
        setOnline(true);
        if (wasRetry) reconnectListeners.forEach((fn) => fn());
      },
      closed: (event) => {
        clearTimeout(pongDue);
        const code = event && event.code;
        if (code === 4401 || code === 4403) refused(REFUSED);
        else if (code !== 1000) setOnline(false);
      },
    },
  });
  client = made;
  return client;
}

function closeSocket() {
  // The reference client's dispose awaits the connection it was making: one the server refused
  // (a revoked token) rejects there, which is no error of the page's.
  if (client) Promise.resolve(client.dispose()).catch(() => {});
  client = null;
}

/// Subscribes; `onItem` gets each `data`, `onError` a GqlError. Returns the unsubscribe
/// function. A dropped connection is retried by the client; `onReconnect` lets the caller
/// re-fetch what it may have missed.
export function subscribe(query, variables, onItem, onError) {
  return socket().subscribe(
    { query, variables },
    {
      next: (msg) => {
        if (msg.errors && msg.errors.length) onError && onError(new GqlError(msg.errors));
        else onItem(msg.data);
      },
      error: (e) => {
        const errors = Array.isArray(e) ? e : [{ message: String((e && e.reason) || e) }];
        onError && onError(new GqlError(errors));
      },
      complete: () => {},
    },
  );
}

/// Coalesces bursts: `fn` runs at most once per animation frame, with every item that came
/// since the last run, in order. With `minMs`, runs are also at least that far apart (still
/// in an animation frame), so a page's work per second stays bounded however fast updates
/// come.
export function perFrame(fn, minMs = 0) {
  let pending = [];
  let scheduled = false;
  let last = -Infinity;
  const run = (now) => {
    if (now - last < minMs) {
      setTimeout(() => requestAnimationFrame(run), minMs - (now - last));
      return;
    }
    scheduled = false;
    last = now;
    const items = pending;
    pending = [];
    fn(items);
  };
  return (item) => {
    pending.push(item);
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(run);
  };
}

/// `load` (a function returning a promise) run on `trigger()`: at most one at a time, one more
/// after it when triggered meanwhile, and starts at least `minMs` apart — a page's reads stay
/// bounded however fast updates come and however slow the link (dash10: the batch page read
/// its whole summary 26 times a second, ~30 reads at once on a slow link). `trigger.cancel()`
/// drops what waits.
export function coalesced(load, minMs) {
  let running = false;
  let wanted = false;
  let last = -Infinity;
  let timer = null;
  const run = () => {
    timer = null;
    const wait = last + minMs - Date.now();
    if (wait > 0) {
      timer = setTimeout(run, wait);
      return;
    }
    running = true;
    wanted = false;
    last = Date.now();
    Promise.resolve()
      .then(load)
      .catch(() => {})
      .finally(() => {
        running = false;
        if (wanted) trigger();
      });
  };
  const trigger = () => {
    if (running) wanted = true;
    else if (!timer) run();
  };
  trigger.cancel = () => {
    clearTimeout(timer);
    timer = null;
    wanted = false;
  };
  return trigger;
}

/// The state a person reads: waiting / executing / succeeded / failed / cancelled (a COMPLETE
/// agenda's message says how it ended).
export function stateOf(p) {
  if (!p) return 'unknown';
  const s = (p.processingState || '').toLowerCase();
  if (s !== 'complete') return s;
  const m = (p.processingStateMessage || '').toLowerCase();
  return ['succeeded', 'failed', 'cancelled'].includes(m) ? m : 'complete';
}

export function fmtTime(t) {
  if (!t) return '';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

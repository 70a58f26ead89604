// The dashboard's shell: sign-in with a bearer token, hash routes, the navigation, and the
// views (views.js, overview.js). Everything it shows comes from the public GraphQL API with
// the signed-in token.

import { html, render, useState, useEffect, useRef } from './vendor/htm-preact-3.1.1.mjs';
import { gql, token, setToken, adoptFragmentToken, onConnection, onSignedOut, onReadiness, offeredToken, setOffer, onOffer } from './api.js';
import { AgendasView, AgendaView, ErrorLine, cutKey, useVisibleCustomers } from './views.js';
import { OverviewView, BatchView, InsightsView, TemplatesView, TemplateView } from './overview.js';

/// `#/agendas?customer=x` → { name: 'agendas', parts: [], query: {customer: 'x'} }.
function parseRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, qs] = h.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const query = Object.fromEntries(new URLSearchParams(qs || ''));
  return { name: parts[0] || 'overview', parts: parts.slice(1), query };
}

export function navigate(name, query = {}, parts = []) {
  const qs = new URLSearchParams(query).toString();
  location.hash = '#/' + [name, ...parts.map(encodeURIComponent)].join('/') + (qs ? '?' + qs : '');
}

/// A sign-in link's token, offered: whom it signs in as (read with it), and the choice.
function Offer({ offer, onSignedIn }) {
  const [who, setWho] = useState(null);
  // The question takes focus once it can be answered (dash55 L5: focus sat in the empty token
  // field, and a screen reader read that first).
  const accept = useRef(null);
  useEffect(() => {
    if (who && accept.current) accept.current.focus();
  }, [who]);
  useEffect(() => {
    setWho(null);
    let live = true;
    gql('{ me { name role customers } }', {}, offer)
      .then((d) => live && setWho({ me: d.me }))
      .catch((e) => live && setWho({ error: e }));
    return () => {
      live = false;
    };
  }, [offer]);
  const decline = () => setOffer('');
  const signIn = () => {
    setOffer('');
    onSignedIn(offer);
  };
  let body;
  if (who && who.me) {
    body = html`<p>The link you followed signs this tab in as <b id="offer-name">${who.me.name}</b> <span class="muted">(${who.me.role}; ${who.me.customers.join(', ')})</span>.
      Accept only a link you expected from someone you trust: this tab would then work as that account, on its customers.</p>
      <p><button id="offer-accept" ref=${accept} onClick=${signIn}>Sign in as ${who.me.name}</button> <button id="offer-decline" onClick=${decline}>Not now</button></p>`;
  } else if (who) {
    body = html`<p id="offer-refused">This server does not accept the link's token: ${who.error.message}</p>
      <p><button id="offer-decline" ref=${accept} onClick=${decline}>Dismiss</button></p>`;
  } else {
    body = html`<p class="muted">Reading whom the link signs in as…</p>`;
  }
  return html`<section class="offer" id="offer" role="alertdialog" aria-labelledby="offer-title">
    <h2 id="offer-title">Sign in from a link?</h2>${body}</section>`;
}

function SignIn({ onSignedIn, error }) {
  const [value, setValue] = useState('');
  const [offer, setOfferShown] = useState(offeredToken());
  useEffect(() => onOffer(setOfferShown), []);
  return html`<main class="signin">
    <h1>pop</h1>
    ${offer && html`<${Offer} key=${offer} offer=${offer} onSignedIn=${onSignedIn}/>`}
    <form id="signin" onSubmit=${(e) => {
      e.preventDefault();
      onSignedIn(value.trim());
    }}>
      <label>Token <input id="token" type="password" autocomplete="off" value=${value} onInput=${(e) => setValue(e.target.value)} autofocus=${!offer}/></label>
      <button type="submit">Sign in</button>
    </form>
    <${ErrorLine} error=${error}/>
    <p class="muted">Use a bearer token of this server: one from its token file (<code>--token-file</code> or <code>POP_TOKENS</code>),
      or, on a server started without one, the admin token: its first start printed a sign-in
      link with it, and it is in <code>${'<data-dir>/admin.token'}</code>. The token stays in this tab until you sign out.</p>
  </main>`;
}

function App() {
  const [route, setRoute] = useState(parseRoute());
  const [me, setMe] = useState(null);
  const [error, setError] = useState(null);
  const [signedIn, setSignedIn] = useState(!!token());
  // Whether the server answers; `generation` counts its comebacks, and keys the view, so a
  // page that failed or went stale meanwhile reads everything again.
  const [online, setOnline] = useState(true);
  const [generation, setGeneration] = useState(0);
  const meRef = useRef(null);
  meRef.current = me;

  useEffect(() => onConnection((up) => {
    setOnline(up);
    if (up) setGeneration((g) => g + 1);
  }), []);
  // Why the server says it cannot do its work, while it answers (`/readyz`).
  const [notReady, setNotReady] = useState(null);
  useEffect(() => onReadiness(setNotReady), []);
  // A token refused after sign-in (revoked, or the server's tokens changed): back to the form,
  // saying why.
  useEffect(() => onSignedOut((why) => {
    if (!meRef.current) return;
    setToken('');
    setMe(null);
    setError(why);
    setSignedIn(false);
  }), []);

  useEffect(() => {
    const on = () => setRoute(parseRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  // Another page (not another filter of one): focus goes to it, as a page load would take a
  // reader there (dash13: after a link, focus was on nothing and Tab went through the header).
  const page = `${route.name}/${route.parts.join('/')}`;
  const shownPage = useRef(page);
  useEffect(() => {
    if (shownPage.current === page) return;
    shownPage.current = page;
    const main = document.getElementById('main');
    if (main) main.focus({ preventScroll: true });
  }, [page]);
  // Signed in from the sign-in page: focus goes to the page it opens, as after every page
  // change (dash58 L4: it stayed on the document's body). Not on a load of a tab already
  // signed in, whose first Tab offers the way past the header.
  const justSignedIn = useRef(false);
  useEffect(() => {
    if (!me || !justSignedIn.current) return;
    justSignedIn.current = false;
    const main = document.getElementById('main');
    if (main) main.focus({ preventScroll: true });
  }, [me]);
  useEffect(() => {
    if (!signedIn) return;
    const sentWith = token();
    gql('{ me { name role customers allowed } }')
      .then((d) => {
        setMe(d.me);
        setError(null);
      })
      .catch((e) => {
        // Signed out meanwhile by another request's refusal, which said why, or signed in
        // with another token: this answer is stale (dash10: its generic text replaced why).
        if (token() !== sentWith) return;
        // A token refused before any page was served with it was never accepted: not
        // "revoked" (dash12: a mistyped token was said to be revoked).
        if (e.code === 'UNAUTHENTICATED' && !meRef.current) {
          e.message = 'this server does not accept this token: check that it was pasted whole and is one of this server\'s (its token file, or <data-dir>/admin.token)';
        }
        setError(e);
        if (e.code === 'UNAUTHENTICATED') {
          setToken('');
          setSignedIn(false);
        }
      });
    // Read again when the server comes back: a sign-in made during an outage finishes then.
  }, [signedIn, generation]);
  const customers = useVisibleCustomers(me);

  if (!signedIn) {
    return html`<${SignIn} error=${error} onSignedIn=${(t) => {
      setToken(t);
      justSignedIn.current = true;
      setSignedIn(true);
    }}/>`;
  }
  if (!me) return html`<main><${ErrorLine} error=${error}/><p class="muted">Signing in…${online ? '' : ' (waiting for the server to answer)'}</p></main>`;
  const signOut = () => {
    setToken('');
    setMe(null);
    setSignedIn(false);
    location.hash = '#/';
  };
  const r = route;
  // A title per page, so tabs, bookmarks and the history menus tell them apart (dash10).
  // Ids and linkIds cut as where they label a page (dash58 L3: a 4,096-character linkId made a
  // title of 4,108).
  const titled = { agendas: 'Agendas', agenda: `Agenda ${cutKey(r.parts[1])}`, batch: `Batch ${cutKey(r.parts[r.parts.length - 1])}`,
    insights: 'Insights & pools', templates: r.parts[0] ? `Template ${cutKey(r.parts[0])}` : 'Templates' }[r.name] || 'Overview';
  document.title = `${titled} · pop`;
  let view;
  switch (r.name) {
    case 'agendas':
      view = html`<${AgendasView} me=${me} query=${r.query} navigate=${navigate} customers=${customers}/>`;
      break;
    case 'agenda':
      view = html`<${AgendaView} key=${r.parts.join('/')} me=${me} customerId=${r.parts[0]} id=${r.parts[1]}/>`;
      break;
    case 'batch':
      // `#/batch/<customer>/<linkId>`, or an older `#/batch/<linkId>` (every visible customer).
      view = r.parts.length > 1
        ? html`<${BatchView} key=${r.parts.join('/')} me=${me} customerId=${r.parts[0]} linkId=${r.parts[1]}/>`
        : html`<${BatchView} key=${r.parts[0]} me=${me} linkId=${r.parts[0]}/>`;
      break;
    case 'insights':
      view = html`<${InsightsView} me=${me} customers=${customers}/>`;
      break;
    case 'templates':
      view = r.parts[0] ? html`<${TemplateView} key=${r.parts[0]} me=${me} id=${r.parts[0]} customers=${customers}/>` : html`<${TemplatesView} me=${me}/>`;
      break;
    default:
      view = html`<${OverviewView} me=${me} customers=${customers}/>`;
  }
  const link = (name, label) => html`<a href=${'#/' + name} class=${r.name === name ? 'active' : ''}>${label}</a>`;
  const skip = () => {
    const main = document.getElementById('main');
    if (main) main.focus();
  };
  return html`<div class="shell">
    <button class="skip" id="skip" onClick=${skip}>Skip to the page</button>
    <header>
      <span class="logo">pop</span>
      <nav>${link('overview', 'Overview')}${link('agendas', 'Agendas')}${link('insights', 'Insights & pools')}${link('templates', 'Templates')}<a href="/graphql">GraphiQL</a></nav>
      <span class="who" id="who">${me.name} <span class="muted">(${me.role}; ${me.customers.join(', ')})</span></span>
      <button id="signout" onClick=${signOut}>Sign out</button>
    </header>
    ${!online && html`<p class="banner" id="offline" role="status">The server does not answer (stopped or restarting?). What you see may be out of date; this page reads everything again when it is back.</p>`}
    ${online && notReady && html`<p class="banner" id="not-ready" role="status"><b>The server is not ready:</b> changes may fail and what you see may lag. It says: <span class="why">${notReady.length > 600 ? notReady.slice(0, 599) + '…' : notReady}</span></p>`}
    <main key=${generation} id="main" tabindex="-1">${view}</main>
  </div>`;
}

adoptFragmentToken();
// A sign-in link followed in a tab already open on the dashboard changes only the fragment:
// taken as on a load (dash54: nothing happened, and the token stayed in the address bar). A
// tab signed in already loads again, where the link is asked about once, as any link is; one
// signed in with none shows the offer on its sign-in page.
window.addEventListener('hashchange', () => {
  if (!/^#token=/.test(location.hash)) return;
  if (token()) location.reload();
  else adoptFragmentToken();
});
render(html`<${App}/>`, document.getElementById('app'));

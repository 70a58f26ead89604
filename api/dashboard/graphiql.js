// GraphiQL, offline (vendored React, GraphiQL and graphql-ws), signed in with the dashboard's
// token: the dashboard keeps it in this tab's sessionStorage, so the schema and its docs load
// on the first visit. Without one, a token typed into the headers pane
// (`{"Authorization": "Bearer …"}`) is used, over HTTP and for subscriptions.
(function () {
  'use strict';
  var session = sessionStorage.getItem('pop.token') || '';
  var wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/graphql/ws';

  function authorization(headers) {
    var h = headers || {};
    var v = h.Authorization || h.authorization;
    if (v) return v;
    return session ? 'Bearer ' + session : '';
  }

  // Whether the operation to run (`operationName`, else the first) is a subscription.
  function isSubscription(params) {
    var q = (params.query || '').replace(/#[^\n]*/g, '');
    var re = /(^|[\s}])(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?/g;
    var m;
    while ((m = re.exec(q))) {
      if (!params.operationName || m[3] === params.operationName) return m[2] === 'subscription';
    }
    return false;
  }

  var ws = null;
  var wsAuth = null;
  function socket(auth) {
    if (ws && wsAuth === auth) return ws;
    if (ws) ws.dispose();
    wsAuth = auth;
    ws = window.graphqlWs.createClient({ url: wsUrl, lazy: true, connectionParams: { authorization: auth } });
    return ws;
  }

  // No token yet (none in the session, the headers pane's placeholder unchanged): said here,
  // without a request the server would refuse (dash58 L5: the schema's load logged four 401s
  // in the console before anyone typed a token).
  var NO_TOKEN = 'no token: sign in on the dashboard (/), or put your token in the headers pane ' +
    '({"Authorization": "Bearer <token>"}), then run the query again (and re-fetch the schema ' +
    'from the docs pane)';
  function fetcher(params, opts) {
    var auth = authorization(opts && opts.headers);
    if (!auth || auth.indexOf('<token>') >= 0) {
      return Promise.resolve({ errors: [{ message: NO_TOKEN, extensions: { code: 'UNAUTHENTICATED' } }] });
    }
    if (isSubscription(params)) {
      var client = socket(auth);
      return {
        subscribe: function (sink) {
          var observer = typeof sink === 'function' ? { next: sink } : sink;
          var dispose = client.subscribe(params, {
            next: function (v) { observer.next && observer.next(v); },
            error: function (e) { observer.error && observer.error(e); },
            complete: function () { observer.complete && observer.complete(); },
          });
          return { unsubscribe: dispose };
        },
      };
    }
    var headers = Object.assign({ 'content-type': 'application/json' }, (opts && opts.headers) || {});
    delete headers.Authorization;
    if (auth) headers.authorization = auth;
    return fetch('/graphql', { method: 'POST', headers: headers, body: JSON.stringify(params) }).then(function (r) {
      return r.json();
    });
  }

  // GraphiQL's history keeps each query's headers whatever `shouldPersistHeaders` says, in
  // localStorage by default (dash58 M1: a bearer token typed into the headers pane stayed in
  // the browser profile after a reload and the dashboard's sign-out). Its storage here is this
  // tab's sessionStorage, as the dashboard's token, with the headers of its history and
  // favourites blanked (null, as GraphiQL itself keeps a tab's; its other keys as they are:
  // review58 M2, a rewrite of every value dropped the saved tabs and reformatted variables).
  var HISTORY = { 'graphiql:queries': 'queries', 'graphiql:favorites': 'favorites' };
  function withoutHeaders(key, value) {
    var list = HISTORY[key];
    if (!list) return value;
    try {
      var kept = JSON.parse(value);
      (kept && Array.isArray(kept[list]) ? kept[list] : []).forEach(function (item) {
        if (item && typeof item === 'object' && 'headers' in item) item.headers = null;
      });
      return JSON.stringify(kept);
    } catch (e) {
      return value;
    }
  }
  function ours() {
    var keys = [];
    for (var i = 0; i < sessionStorage.length; i++) {
      var k = sessionStorage.key(i);
      if (k && k.indexOf('graphiql:') === 0) keys.push(k);
    }
    return keys;
  }
  var storage = {
    getItem: function (k) { return sessionStorage.getItem(k); },
    setItem: function (k, v) { sessionStorage.setItem(k, withoutHeaders(k, v)); },
    removeItem: function (k) { sessionStorage.removeItem(k); },
    clear: function () { ours().forEach(function (k) { sessionStorage.removeItem(k); }); },
    get length() { return ours().length; },
  };
  // What an earlier build left in localStorage goes too.
  Object.keys(localStorage).forEach(function (k) {
    if (k.indexOf('graphiql:') === 0) localStorage.removeItem(k);
  });

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultHeaders: session ? '' : '{"Authorization": "Bearer <token>"}',
      shouldPersistHeaders: false,
      storage: storage,
      defaultQuery: '# Signed in with ' + (session ? 'the dashboard\'s token.' : 'no token: sign in on the dashboard (/) or add an Authorization header below.') + '\n{\n  me { name role customers }\n}\n',
    }),
  );
})();

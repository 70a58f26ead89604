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

  function fetcher(params, opts) {
    var auth = authorization(opts && opts.headers);
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

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultHeaders: session ? '' : '{"Authorization": "Bearer <token>"}',
      shouldPersistHeaders: false,
      defaultQuery: '# Signed in with ' + (session ? 'the dashboard\'s token.' : 'no token: sign in on the dashboard (/) or add an Authorization header below.') + '\n{\n  me { name role customers }\n}\n',
    }),
  );
})();

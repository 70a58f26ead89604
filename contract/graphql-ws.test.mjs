// The contract of pop's WebSocket API with the reference graphql-transport-ws client: the
// npm package `graphql-ws` (createClient) over `ws`, plus raw `ws` sockets for the close codes
// of https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md.
//
// Environment: POP_URL (the WebSocket endpoint, ws://host:port/graphql/ws), POP_HTTP (the
// GraphQL HTTP endpoint, http://host:port/graphql) and POP_TOKEN (an admin token). Run by
// api/tests/contract_graphql_ws.rs against a freshly started server; objects get a unique
// suffix so the file can also be run against a long-lived one. Every wait is bounded.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';

const POP_URL = required('POP_URL');
const POP_HTTP = required('POP_HTTP');
const POP_TOKEN = required('POP_TOKEN');
const PROTOCOL = 'graphql-transport-ws';
/** Longest any step waits for a message before the test fails saying what it waited for. */
const WAIT_MS = 20_000;
const TEST = { timeout: 90_000 };

const PROGRESS = `subscription($id: String!) {
  agendaProgress(id: $id) { position progress { agendaId processingState processingStateMessage } }
}`;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set (see the header of this file)`);
  return value;
}

/** `promise`, or a rejection naming `what` after WAIT_MS. */
function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A GraphQL request over HTTP as the admin; returns `data`, throws on any error. */
async function gql(query, variables = {}) {
  const response = await bounded(
    fetch(POP_HTTP, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${POP_TOKEN}` },
      body: JSON.stringify({ query, variables }),
    }),
    `HTTP answer to ${query.slice(0, 40)}`,
  );
  const body = await response.json();
  assert.equal(body.errors, undefined, `errors from ${query}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

// The objects of this run: a pool, a customer on it, an insight that takes its ffmpeg
// operations, and one submitted agenda.
const run = randomUUID().slice(0, 8);
const pool = `contract-pool-${run}`;
const customer = `contract-${run}`;
let agendaId;

before(async () => {
  await gql('mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }', {
    p: { id: pool, customerId: customer, title: 'contract pool' },
  });
  await gql('mutation($c: JSON!) { createCustomer(customer: $c) { position } }', {
    c: { id: customer, title: 'contract customer', resourcePoolId: pool },
  });
  const insight = await gql('mutation($i: JSON!) { createInsight(insight: $i) { position } }', {
    i: {
      id: `contract-insight-${run}`,
      customerId: customer,
      title: 'Transcode',
      resourcePoolId: pool,
      queueSize: 5,
      isGlobal: false,
      mappers: { operationType: ['ffmpeg'] },
    },
  });
  const submitted = await gql(
    'mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { agenda { id } position } }',
    {
      a: {
        customerId: customer,
        linkId: `contract-link-${run}`,
        title: 'transcode',
        operations: [
          { name: 'probe', type: 'ffmpeg', payload: { src: 'in.mp4' } },
          { name: 'encode', type: 'ffmpeg', payload: '@<probe.out::/streams>' },
        ],
      },
      p: insight.createInsight.position,
    },
  );
  agendaId = submitted.submitAgenda.agenda.id;
  assert.ok(agendaId, 'submitAgenda returned an agenda id');
});

/** A raw graphql-transport-ws socket keeping every message and the close in order. */
class Raw {
  static async open(protocol = PROTOCOL) {
    const raw = new Raw(new WebSocket(POP_URL, protocol));
    await bounded(
      new Promise((resolve, reject) => {
        raw.ws.once('open', resolve);
        raw.ws.once('error', reject);
      }),
      'WebSocket open',
    );
    return raw;
  }

  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiting = [];
    ws.on('message', (data) => this.push({ message: JSON.parse(String(data)) }));
    ws.on('close', (code, reason) => this.push({ close: { code, reason: String(reason) } }));
    ws.on('error', () => {}); // a close follows; the tests look at its code
  }

  push(item) {
    const waiter = this.waiting.shift();
    if (waiter) waiter(item);
    else this.queue.push(item);
  }

  /** The next message or close, in arrival order. */
  take(what) {
    const item = this.queue.shift();
    if (item) return Promise.resolve(item);
    return bounded(new Promise((resolve) => this.waiting.push(resolve)), what);
  }

  send(message) {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  async message(what) {
    const item = await this.take(what);
    assert.ok(item.message, `expected ${what}, got close ${JSON.stringify(item.close)}`);
    return item.message;
  }

  async closed(what) {
    const item = await this.take(what);
    assert.ok(item.close, `expected the server to close (${what}), got ${JSON.stringify(item.message)}`);
    return item.close;
  }

  async init(payload = { authorization: `Bearer ${POP_TOKEN}` }) {
    this.send({ type: 'connection_init', payload });
    assert.deepEqual(await this.message('connection_ack'), { type: 'connection_ack' });
  }

  dispose() {
    this.ws.terminate();
  }
}

test('the reference client follows an agenda until it is cancelled, then completes', TEST, async () => {
  const client = createClient({
    url: POP_URL,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${POP_TOKEN}` },
    retryAttempts: 0,
  });
  try {
    const updates = client.iterate({ query: PROGRESS, variables: { id: agendaId } });
    const first = await bounded(updates.next(), 'the current state of the agenda');
    assert.equal(first.done, false);
    const progress = first.value.data.agendaProgress.progress;
    assert.equal(progress.agendaId, agendaId);
    assert.deepEqual([progress.processingState, progress.processingStateMessage], ['WAITING', 'added']);

    await gql('mutation($id: String!) { cancelAgenda(agendaId: $id, reason: "contract") { position } }', {
      id: agendaId,
    });
    let state;
    do {
      const update = await bounded(updates.next(), 'the cancelled state of the agenda');
      assert.equal(update.done, false, 'the subscription ended before the cancellation arrived');
      assert.equal(update.value.errors, undefined, JSON.stringify(update.value.errors));
      const p = update.value.data.agendaProgress.progress;
      state = `${p.processingState}/${p.processingStateMessage}`;
    } while (state !== 'COMPLETE/cancelled');

    // The client completes it: the iterator ends and the connection keeps working.
    const ended = await bounded(updates.return(), 'the client-side completion');
    assert.equal(ended.done, true);

    // (d) with the reference client: a query over the socket is one result, then complete.
    const results = [];
    for await (const result of client.iterate({ query: '{ agendas(first: 1) { position } }' })) {
      results.push(result);
    }
    assert.equal(results.length, 1, JSON.stringify(results));
    assert.equal(typeof results[0].data.agendas.position, 'string');
  } finally {
    await client.dispose();
  }
});

test('the reference client reports a bad token as close 4403', TEST, async () => {
  const client = createClient({
    url: POP_URL,
    webSocketImpl: WebSocket,
    connectionParams: { token: 'tok_wrong_0000000000000000000000' },
    retryAttempts: 0,
  });
  try {
    const error = await bounded(
      new Promise((resolve) => {
        client.subscribe(
          { query: '{ agendas { position } }' },
          { next: () => {}, error: resolve, complete: () => resolve(null) },
        );
      }),
      'the refusal of the connection',
    );
    assert.equal(error?.code, 4403, `expected a CloseEvent with code 4403, got ${error}`);
  } finally {
    await client.dispose();
  }
});

test('a query over a raw socket is next then complete', TEST, async () => {
  const raw = await Raw.open();
  try {
    await raw.init();
    raw.send({ id: 'q1', type: 'subscribe', payload: { query: '{ agendas(first: 1) { position } }' } });
    const next = await raw.message('next for q1');
    assert.equal(next.type, 'next');
    assert.equal(next.id, 'q1');
    assert.equal(typeof next.payload.data.agendas.position, 'string');
    assert.deepEqual(await raw.message('complete for q1'), { id: 'q1', type: 'complete' });
  } finally {
    raw.dispose();
  }
});

test('ping is answered with pong carrying the payload', TEST, async () => {
  const raw = await Raw.open();
  try {
    raw.send({ type: 'ping', payload: { at: 1 } });
    assert.deepEqual(await raw.message('pong'), { type: 'pong', payload: { at: 1 } });
  } finally {
    raw.dispose();
  }
});

test('close codes of the protocol', TEST, async (t) => {
  const cases = [
    {
      name: 'invalid JSON → 4400',
      code: 4400,
      run: async (raw) => raw.send('{not json'),
    },
    {
      name: 'subscribe before connection_init → 4401',
      code: 4401,
      run: async (raw) => raw.send({ id: 's1', type: 'subscribe', payload: { query: '{ agendas { position } }' } }),
    },
    {
      name: 'bad token → 4403',
      code: 4403,
      run: async (raw) =>
        raw.send({ type: 'connection_init', payload: { authorization: 'Bearer tok_wrong_0000000000000000000000' } }),
    },
    {
      name: 'second connection_init → 4429',
      code: 4429,
      run: async (raw) => {
        await raw.init();
        raw.send({ type: 'connection_init', payload: { authorization: `Bearer ${POP_TOKEN}` } });
      },
    },
    {
      name: 'duplicate subscription id → 4409',
      code: 4409,
      run: async (raw) => {
        await raw.init();
        const subscribe = { id: 'dup', type: 'subscribe', payload: { query: PROGRESS, variables: { id: agendaId } } };
        raw.send(subscribe);
        const first = await raw.message('the first next of dup');
        assert.equal(first.type, 'next', JSON.stringify(first));
        raw.send(subscribe);
      },
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const raw = await Raw.open();
      try {
        await c.run(raw);
        const close = await raw.closed(c.name);
        assert.equal(close.code, c.code, `${c.name}: closed with ${close.code} ${close.reason}`);
      } finally {
        raw.dispose();
      }
    });
  }
});


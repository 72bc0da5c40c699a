// Unit tests of the built library (dist/index.js) in Node, with a scripted
// EventSource and fetch: ids, backoff, and the client's decisions (resume,
// reopen after refusals, renewal, cookie sessions, soft refusals). The
// browser tests (tests/browser/09–12) run it in Chromium against the server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compareEventIds, Cursor, backoffDelay, parseRetryAfter, withParam, isOrderUpdate, parseNotification,
  createNotifyClient,
} from '../dist/index.js';

// ---- pure logic -------------------------------------------------------------------

test('event ids compare as decimal numbers of any size', () => {
  assert.ok(compareEventIds('1795856670227372', '1795856670227371') > 0);
  assert.ok(compareEventIds('99', '100') < 0);
  assert.ok(compareEventIds('18446744073709551615', '18446744073709551614') > 0, 'beyond 2^53');
  assert.equal(compareEventIds('007', '7'), 0);
  assert.equal(compareEventIds('42', '42'), 0);
});

test('the cursor drops repeated notifications but not other events', () => {
  const c = new Cursor();
  assert.equal(c.offer('message', '10'), true);
  assert.equal(c.offer('message', '10'), false, 'same id');
  assert.equal(c.offer('message', '9'), false, 'older id');
  assert.equal(c.offer('reset', '10'), true);
  assert.equal(c.offer('message', '11'), true);
  assert.equal(c.last, '11');
  assert.equal(c.offer('message', ''), true, 'no id: cannot tell');
  assert.equal(new Cursor('5').offer('message', '5'), false, 'a start id counts as seen');
});

test('backoff grows, is capped, is jittered between half and all, and honours Retry-After', () => {
  const opts = { initialMs: 1000, maxMs: 8000, factor: 2 };
  assert.equal(backoffDelay(1, opts, null, () => 0), 500);
  assert.equal(backoffDelay(1, opts, null, () => 1), 1000);
  assert.equal(backoffDelay(3, opts, null, () => 1), 4000);
  assert.equal(backoffDelay(10, opts, null, () => 1), 8000, 'capped');
  assert.equal(backoffDelay(10, opts, null, () => 0), 4000);
  assert.equal(backoffDelay(1, opts, 5000, () => 0), 5000, 'never before Retry-After');
  assert.equal(backoffDelay(1, opts, 5000, () => 1), 7500, 'Retry-After spread by up to half');
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(2, opts);
    assert.ok(d >= 1000 && d <= 2000, `${d}`);
  }
});

test('Retry-After seconds, URL parameters, notification shapes', () => {
  assert.equal(parseRetryAfter('3'), 3000);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT'), null);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(withParam('/api/x?token=t', 'lastEventId', '12'), '/api/x?token=t&lastEventId=12');
  assert.equal(withParam('/api/x?lastEventId=3', 'lastEventId', null), '/api/x');
  assert.equal(withParam('https://n.example/api/x', 'token', 'a.b-c_d'), 'https://n.example/api/x?token=a.b-c_d');
  const order = { type: 'order_update', title: 'T', message: 'M', data: { orderId: 'o', orderNumber: 'CB1', status: 'ready', otp: '123456' } };
  assert.equal(isOrderUpdate(order), true);
  assert.equal(isOrderUpdate({ ...order, data: { orderId: 'o', status: 'ready' } }), false, 'no orderNumber');
  assert.equal(isOrderUpdate({ ...order, data: { ...order.data, otp: 123456 } }), false, 'otp must be a string');
  assert.deepEqual(parseNotification(JSON.stringify(order)), order);
  assert.equal(parseNotification('not json'), null);
  assert.equal(parseNotification('[1]'), null);
});

// ---- the client with a scripted EventSource -------------------------------------------

class FakeEventSource {
  static all = [];
  constructor(url, init = {}) {
    this.url = url;
    this.withCredentials = !!init.withCredentials;
    this.readyState = 0;
    this.listeners = {};
    this.closed = false;
    this.lastEventId = '';
    FakeEventSource.all.push(this);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  emit(type, event = {}) {
    for (const fn of this.listeners[type] ?? []) fn(event);
  }
  open() {
    this.readyState = 1;
    this.emit('open');
  }
  /** A frame as the browser parses it: `id` updates the last event id. */
  send(type, data, id) {
    if (id !== undefined) this.lastEventId = id;
    this.emit(type, { data, lastEventId: this.lastEventId });
  }
  /** The browser gives up (non-200 answer). */
  refuse() {
    this.readyState = 2;
    this.emit('error');
  }
  /** A network error: the browser reconnects by itself. */
  drop() {
    this.readyState = 0;
    this.emit('error');
  }
  get query() {
    return new URL(this.url, 'http://x').searchParams;
  }
}

function response(status, headers = {}) {
  return { status, ok: status >= 200 && status < 300, headers: new Headers(headers) };
}

async function until(what, check, timeout = 3000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const ORDER = (status, extra = {}) => JSON.stringify({
  type: 'order_update', title: 't', message: 'm', data: { orderId: 'o', orderNumber: 'CB1', status, ...extra },
});

function harness(options = {}) {
  FakeEventSource.all = [];
  const seen = { orders: [], others: [], resets: [], states: [], errors: [], renewed: [], tokens: [], fetches: [] };
  let n = 0;
  const fetchImpl = options.fetch ?? (async () => response(503, { 'Retry-After': '0' }));
  const client = createNotifyClient({
    baseUrl: 'https://notify.example',
    backoff: { initialMs: 1, maxMs: 2 },
    EventSource: FakeEventSource,
    fetch: async (url, init) => {
      seen.fetches.push({ url, init });
      return fetchImpl(url, init);
    },
    getToken: async (reason) => {
      if (options.getToken) return options.getToken(reason);
      seen.tokens.push(reason);
      return `tok${++n}`;
    },
    onOrderUpdate: (o, m) => seen.orders.push([m.id, o.data.status]),
    onNotification: (o, m) => seen.others.push([m.id, o.type]),
    onReset: (info) => seen.resets.push(info),
    onStateChange: (c) => seen.states.push(`${c.state}:${c.reason}`),
    onError: (e) => seen.errors.push(`${e.code}:${e.status}:${e.fatal}`),
    onTokenRenewed: (r) => seen.renewed.push(r),
    ...options.client,
  });
  const es = () => FakeEventSource.all[FakeEventSource.all.length - 1];
  return { client, seen, es, count: () => FakeEventSource.all.length };
}

test('token mode: typed order updates, other types, resets, bad data', async () => {
  const { client, seen, es } = harness();
  await until('a stream', () => es());
  assert.equal(es().url, 'https://notify.example/api/notifications/subscribe?token=tok1');
  assert.equal(es().withCredentials, false);
  es().open();
  assert.equal(client.state, 'live');
  es().send('message', ORDER('accepted'), '11');
  es().send('message', JSON.stringify({ type: 'promo', title: 'x' }), '12');
  es().send('message', 'not json', '13');
  es().send('reset', '{"reason":"history_truncated"}');
  es().send('message', ORDER('ready', { otp: '123456' }), '14');
  assert.deepEqual(seen.orders, [['11', 'accepted'], ['14', 'ready']]);
  assert.deepEqual(seen.others, [['12', 'promo']]);
  assert.deepEqual(seen.resets, [{ reason: 'history_truncated' }]);
  assert.deepEqual(seen.errors, ['bad_notification:null:false']);
  assert.equal(client.lastEventId, '14');
  client.close();
  assert.equal(es().closed, true);
  assert.equal(client.state, 'closed');
});

test('a hard refusal: the status is read, a new EventSource resumes from the last id, duplicates are dropped', async () => {
  const { client, seen, es, count } = harness();
  await until('a stream', () => es());
  es().open();
  es().send('message', ORDER('accepted'), '21');
  es().drop(); // the browser's own reconnect: nothing for the library to do
  assert.equal(client.state, 'reconnecting');
  es().refuse(); // ...which is refused with 503
  await until('a second EventSource', () => count() === 2);
  assert.equal(FakeEventSource.all[0].closed, true);
  assert.equal(es().query.get('lastEventId'), '21');
  assert.equal(es().query.get('token'), 'tok1', 'no renewal for a 503');
  assert.deepEqual(seen.tokens, ['initial']);
  assert.equal(seen.fetches[0].init.headers.Accept, 'application/json', 'the probe asks for the JSON answer');
  assert.ok(seen.errors.includes('refused:503:false'));
  es().open();
  es().send('message', ORDER('accepted'), '21'); // replayed twice: dropped
  es().send('message', ORDER('ready'), '22');
  assert.deepEqual(seen.orders, [['21', 'accepted'], ['22', 'ready']]);
  client.close();
});

test('a 401: one renewal, then a fatal error if the new token is refused too', async () => {
  const { client, seen, es, count } = harness({ fetch: async () => response(401) });
  await until('a stream', () => es());
  es().open();
  es().send('message', ORDER('accepted'), '31');
  es().refuse();
  await until('a renewed stream', () => count() === 2);
  assert.deepEqual(seen.tokens, ['initial', 'unauthorized']);
  assert.deepEqual(seen.renewed, ['unauthorized']);
  assert.equal(es().query.get('token'), 'tok2');
  assert.equal(es().query.get('lastEventId'), '31');
  es().refuse(); // refused again before it ever opened
  await until('the fatal error', () => seen.errors.some((e) => e.startsWith('unauthorized')));
  assert.deepEqual(seen.errors, ['unauthorized:401:true']);
  assert.equal(client.state, 'closed');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(count(), 2, 'no third EventSource');
  assert.deepEqual(seen.tokens, ['initial', 'unauthorized'], 'renewed once only');
  client.reconnect(); // e.g. after signing in again
  await until('a stream after reconnect()', () => count() === 3);
  client.close();
});

test('token-expiring: a new token, a new EventSource from the last id, the old one closed', async () => {
  const { client, seen, es, count } = harness();
  await until('a stream', () => es());
  const first = es();
  first.open();
  first.send('token-expiring', '{"expiresAt":1900000000}', '41'); // id from the start frame
  await until('the renewed stream', () => count() === 2);
  assert.equal(first.closed, true);
  assert.deepEqual(seen.tokens, ['initial', 'expiring']);
  assert.equal(es().query.get('token'), 'tok2');
  assert.equal(es().query.get('lastEventId'), '41');
  assert.deepEqual(seen.renewed, ['expiring']);
  client.close();
});

test('a soft refusal (event: unavailable) is left to the browser', async () => {
  const { client, seen, es, count } = harness();
  await until('a stream', () => es());
  es().open();
  es().send('unavailable', '{"error":"draining","retryAfter":2}', '51');
  es().drop();
  assert.equal(client.state, 'reconnecting');
  assert.ok(seen.states.includes('reconnecting:unavailable'));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(count(), 1, 'no new EventSource');
  assert.equal(seen.fetches.length, 0, 'no probe');
  assert.equal(client.lastEventId, '51', 'the position the refusal carried');
  client.close();
});

test('cookie mode: session POST, credentialed stream without token, renewal keeps the stream', async () => {
  const posts = [];
  const { client, seen, es, count } = harness({
    client: { mode: 'cookie' },
    fetch: async (url, init) => {
      if (init.method === 'POST') {
        posts.push([url, init.headers.Authorization, init.credentials]);
        return response(204);
      }
      return response(503);
    },
  });
  await until('a stream', () => es());
  assert.deepEqual(posts, [['https://notify.example/api/notifications/session', 'Bearer tok1', 'include']]);
  assert.equal(es().url, 'https://notify.example/api/notifications/subscribe');
  assert.equal(es().withCredentials, true);
  es().open();
  es().send('token-expiring', '{"expiresAt":1900000000}', '61');
  await until('the renewed session', () => posts.length === 2);
  assert.equal(posts[1][1], 'Bearer tok2');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(count(), 1, 'the stream keeps running; its reconnect carries the new cookie');
  assert.deepEqual(seen.renewed, ['expiring']);
  client.close();
});

test('getToken failing at start is retried with backoff', async () => {
  let calls = 0;
  const { client, seen, es } = harness({
    getToken: async () => {
      calls++;
      if (calls < 3) throw new Error('not signed in yet');
      return 'late';
    },
  });
  await until('a stream', () => es());
  assert.equal(es().query.get('token'), 'late');
  assert.equal(seen.errors.filter((e) => e.startsWith('renew_failed')).length, 2);
  client.close();
});

// The client library (/notify-client.js) with short-lived tokens (6 s,
// `token-expiring` 3 s before): notifications are published all along while
// the library renews its token through getToken() on every token-expiring
// and opens a new EventSource with the new token and lastEventId. Then the
// identity provider fails for a while: the stream ends at the token's
// expiry, the browser's own reconnect gets 401 and gives up, and the library
// renews once ('unauthorized') and resumes. The page receives exactly the
// published ids, each once, in order. In cookie mode the same renewals POST
// a new session cookie and the browser's own reconnects carry it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startProxy, launchBrowser, mintToken, publish, orderUpdate,
  waitFor, delay, libraryTab, lib, eventSourceRequests, assertNoDupIncreasing,
} from './lib/harness.mjs';

const USER = 'student-client-renewal';
const USER_COOKIE = 'student-client-cookie';
const STATUSES = ['accepted', 'preparing', 'ready', 'collected'];

test('client library: token renewals (on token-expiring, and after a 401) lose and repeat nothing', { timeout: 120000 }, async (t) => {
  const res = resources(t, 'client-token-renewal');
  const gw = await startGateway(res, { NOTIFY_TOKEN_EXPIRY_WARNING: '3s', NOTIFY_JWT_LEEWAY: '0s' });
  const proxy = await startProxy(res, gw.port);

  const browser = await launchBrowser(res);
  const calls = []; // {reason, token?, failed?}
  let idpDown = false; // renewals on token-expiring fail while true
  const page = await libraryTab(browser, proxy.base, async (reason) => {
    if (reason === 'expiring' && idpDown) {
      calls.push({ reason, failed: true });
      throw new Error('identity provider unavailable');
    }
    const token = mintToken({ user: USER, ttl: '6s' });
    calls.push({ reason, token });
    return token;
  });

  // A producer publishing all along (paced, so that every phase sees some).
  const published = [];
  const perPhase = [0, 0, 0, 0];
  let phase = 1;
  let producing = true;
  const producer = (async () => {
    for (let i = 0; producing; i++) {
      const status = STATUSES[i % STATUSES.length];
      const at = phase;
      published.push(await publish(gw.base, USER, orderUpdate(status, { otp: status === 'ready' ? String(100000 + i) : undefined })));
      perPhase[at]++;
      await delay(200);
    }
  })();
  const ok = (reason) => calls.filter((c) => c.reason === reason && !c.failed).length;

  // Phase 1: two renewals on token-expiring.
  await waitFor('two renewals on token-expiring', () => ok('expiring') >= 2 && perPhase[1] >= 2, { timeout: 40000 });
  // Phase 2: renewals fail; the token expires; the reconnect gets 401; the
  // library renews with reason 'unauthorized'.
  phase = 2;
  idpDown = true;
  await waitFor('a renewal after a 401', () => ok('unauthorized') >= 1 && perPhase[2] >= 2, { timeout: 40000 });
  idpDown = false;
  phase = 3;
  const afterUnauthorized = ok('expiring');
  // Phase 3: back to renewals on token-expiring.
  await waitFor('another renewal on token-expiring', () => ok('expiring') > afterUnauthorized && perPhase[3] >= 2,
    { timeout: 40000 });
  await lib.waitState(page, 'live');
  producing = false;
  await producer;
  const last = await publish(gw.base, USER, orderUpdate('cancelled'));
  published.push(last);

  await waitFor('every published notification', async () => (await lib.got(page)).includes(last), { timeout: 20000 });
  const got = await lib.got(page);
  assert.ok(perPhase.slice(1).every((n) => n >= 2), `published per phase: ${perPhase.slice(1).join(', ')}`);
  assert.deepEqual(got, published, 'exactly the published ids, once each, in order');
  assertNoDupIncreasing(assert, got, 'received');
  assert.equal(calls[0].reason, 'initial');
  assert.ok(calls.some((c) => c.reason === 'expiring' && c.failed), 'renewals failed while the IdP was down');
  const renewed = (await lib.log(page, 'renewed')).map((e) => e.reason);
  assert.ok(renewed.includes('unauthorized'), `renewed: ${renewed.join(',')}`);
  assert.ok(renewed.filter((r) => r === 'expiring').length >= 3, `renewed: ${renewed.join(',')}`);
  assert.equal((await lib.log(page, 'error')).filter((e) => e.fatal).length, 0, 'no fatal error');

  // How: every EventSource after the first is a new one with the newest
  // token and lastEventId, except the browser's own reconnect that got 401.
  const streams = eventSourceRequests(proxy);
  const tokens = new Map(calls.filter((c) => c.token).map((c) => [c.token, c.reason]));
  const q = (r) => new URL(r.path, 'http://x').searchParams;
  assert.equal(tokens.get(q(streams[0]).get('token')), 'initial');
  assert.equal(q(streams[0]).get('lastEventId'), null);
  const refused = streams.filter((r) => proxy.responseTo(r).startsWith('HTTP/1.1 401'));
  assert.ok(refused.length >= 1, 'a reconnect was refused with 401');
  for (const r of refused) {
    assert.ok(r.headers['last-event-id'], 'the refused one is the browser\'s own reconnect (Last-Event-ID)');
  }
  const probes = proxy.subscribeRequests().filter((r) => r.headers.accept === 'application/json');
  assert.ok(probes.some((r) => proxy.responseTo(r).startsWith('HTTP/1.1 401')), 'the library read the 401');
  const reopened = streams.filter((r) => !r.headers['last-event-id']).slice(1);
  assert.ok(reopened.length >= 4, `new EventSources: ${reopened.length}`);
  for (const r of reopened) {
    assert.ok(/^\d+$/.test(q(r).get('lastEventId') || ''), `a new EventSource resumes: ${r.path.replace(/token=[^&]+/, 'token=…')}`);
    assert.ok(tokens.has(q(r).get('token')), 'with a token from getToken()');
  }
  const afterRefusal = streams[streams.indexOf(refused[0]) + 1];
  assert.equal(tokens.get(q(afterRefusal).get('token')), 'unauthorized', 'the 401 led to a renewal, then a new EventSource');
  const states = (await lib.log(page, 'state')).map((e) => e.state);
  assert.ok(!states.includes('closed'), `never closed: ${states.join(' → ')}`);
});

test('client library, cookie mode: renewals POST a new session cookie, the browser\'s own reconnects carry it, nothing lost', { timeout: 120000 }, async (t) => {
  const res = resources(t, 'client-cookie-renewal');
  const gw = await startGateway(res, { NOTIFY_TOKEN_EXPIRY_WARNING: '3s', NOTIFY_JWT_LEEWAY: '0s' });
  const proxy = await startProxy(res, gw.port);
  const browser = await launchBrowser(res);
  const calls = [];
  const page = await libraryTab(browser, proxy.base, async (reason) => {
    const token = mintToken({ user: USER_COOKIE, ttl: '6s' });
    calls.push({ reason, token });
    return token;
  }, { mode: 'cookie' });

  const published = [];
  let producing = true;
  const producer = (async () => {
    for (let i = 0; producing; i++) {
      published.push(await publish(gw.base, USER_COOKIE, orderUpdate(STATUSES[i % STATUSES.length])));
      await delay(200);
    }
  })();
  // Three streams in a row end at their token's expiry; each reconnect
  // carries the cookie renewed before it.
  const reconnects = () => eventSourceRequests(proxy).filter((r) => r.headers['last-event-id']);
  await waitFor('three reconnects with renewed cookies', () => reconnects().length >= 3 && published.length >= 6,
    { timeout: 60000 });
  await lib.waitState(page, 'live');
  producing = false;
  await producer;
  const last = await publish(gw.base, USER_COOKIE, orderUpdate('cancelled'));
  published.push(last);
  await waitFor('every published notification', async () => (await lib.got(page)).includes(last), { timeout: 20000 });
  assert.deepEqual(await lib.got(page), published, 'exactly the published ids, once each, in order');

  const streams = eventSourceRequests(proxy);
  assert.equal(streams.filter((r) => !r.headers['last-event-id']).length, 1,
    'one EventSource; every later stream is the browser\'s own reconnect');
  for (const r of streams) assert.ok(!/token=/.test(r.path), `no token in a stream URL: ${r.path}`);
  const cookieOf = (r) => (r.headers.cookie || '').match(/campusbite_notify=([^;]*)/)?.[1];
  const tokens = calls.map((c) => c.token);
  for (const r of reconnects()) {
    const i = tokens.indexOf(cookieOf(r));
    assert.ok(i >= 1, 'a reconnect carries a renewed cookie');
  }
  for (const r of streams) {
    assert.ok(proxy.responseTo(r).startsWith('HTTP/1.1 200'), 'no stream was refused');
  }
  const posts = proxy.requests.filter((r) => r.path === '/api/notifications/session' && r.method === 'POST');
  assert.equal(posts.length, calls.length, 'one session POST per token');
  assert.deepEqual([...new Set(calls.slice(1).map((c) => c.reason))], ['expiring']);
  const states = (await lib.log(page, 'state')).map((e) => e.state);
  assert.ok(!states.includes('closed'), `never closed: ${states.join(' → ')}`);
});

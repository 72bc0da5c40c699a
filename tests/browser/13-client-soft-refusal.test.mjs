// Soft refusals with the client library: while the node "drains", every
// stream request gets the contract's soft refusal (200 text/event-stream,
// `retry:`, one `event: unavailable`, end of response; here answered by the
// proxy in front of the node). The library shows it (state reconnecting,
// reason unavailable) and leaves the retries to the browser: no probe, no new
// EventSource; the browser's own reconnect (Last-Event-ID) then resumes
// without loss.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, libraryOnProxy, publish, orderUpdate, waitFor, lib, eventSourceRequests,
} from './lib/harness.mjs';

const USER = 'student-client-soft';
const SUBSCRIBE = /^\/api\/notifications\/subscribe/;

test('client library: soft refusals are left to the browser\'s own reconnect, nothing lost', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'client-soft-refusal');
  const { gw, proxy, page } = await libraryOnProxy(res, USER);
  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  assert.deepEqual(await lib.waitGot(page, 1), [a]);

  const before = proxy.requests.length;
  proxy.refuse = { path: SUBSCRIBE, soft: { error: 'draining', retryAfter: 1 }, retryMs: 700 };
  proxy.cut();
  await waitFor('two soft refusals', () =>
    proxy.requests.slice(before).filter((r) => r.refusedWith === 'soft').length >= 2, { timeout: 20000 });
  await waitFor('the library to show it', async () =>
    (await lib.log(page, 'state')).some((e) => e.reason === 'unavailable' && e.error === 'draining'));
  assert.equal(await lib.state(page), 'reconnecting');
  const b = await publish(gw.base, USER, orderUpdate('ready', { otp: '424242' }));

  proxy.refuse = null;
  await lib.waitGot(page, 2, 20000);
  await lib.waitState(page, 'live');
  const c = await publish(gw.base, USER, orderUpdate('collected'));
  await lib.waitGot(page, 3);
  assert.deepEqual(await lib.got(page), [a, b, c], 'every notification exactly once, in order');

  const [first, ...later] = eventSourceRequests(proxy);
  assert.ok(later.length >= 3, `reconnects: ${later.length}`);
  for (const r of later) {
    assert.equal(r.path, first.path, 'the browser\'s own reconnect: the original URL, no new EventSource');
    assert.equal(r.headers['last-event-id'], a, 'with Last-Event-ID');
  }
  assert.equal(proxy.subscribeRequests().filter((r) => r.headers.accept === 'application/json').length, 0, 'no probe');
  assert.equal((await lib.log(page, 'error')).length, 0, 'no error');
  const states = (await lib.log(page, 'state')).map((e) => e.state);
  assert.ok(!states.includes('closed'), `never closed: ${states.join(' → ')}`);
});

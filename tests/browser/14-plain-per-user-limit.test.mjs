// The plain page (one EventSource, never reopened) past the per-user
// limit: another client holds the user's only slot, so the page's first
// request gets a soft refusal (200, `event: unavailable`, the user's
// position as its id). The other client goes away; the browser retries by
// itself, gets in, and receives what was published while it waited and the
// next notification.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startStatic, launchBrowser, mintToken, publish, orderUpdate, waitFor, metric,
} from './lib/harness.mjs';
import { PLAIN_HTML, openPlain, plain, startReverseProxy, holdStream } from './lib/plain.mjs';

const USER = 'student-one-slot';

test('plain page: past the per-user limit it gets in by itself once the other tab closes', { timeout: 120000 }, async (t) => {
  const res = resources(t, 'plain-per-user-limit');
  const pages = await startStatic(res, { '/plain.html': PLAIN_HTML });
  const gw = await startGateway(res, { NOTIFY_MAX_CONNECTIONS_PER_USER: '1', NOTIFY_CORS_ORIGINS: pages.origin });
  const lb = await startReverseProxy(res, gw.port);
  const token = mintToken({ user: USER });

  const other = await holdStream(`${gw.base}/api/notifications/subscribe?token=${token}`);
  const before = await publish(gw.base, USER, orderUpdate('accepted', { orderNumber: 'L1' }));

  const browser = await launchBrowser(res);
  const page = await openPlain(browser, pages.origin, lb.base, token);
  const [refusal] = await waitFor('a soft refusal of the page', () => {
    const r = lb.softRefusals('too_many_connections');
    return r.length ? r : false;
  });
  const m = refusal.body.match(/^retry: (\d+)\n\nid: (\d+)\n\nevent: unavailable\ndata: \{"error":"too_many_connections","retryAfter":(\d+)\}\n\n$/);
  assert.ok(m, `soft refusal body ${JSON.stringify(refusal.body)}`);
  const [, retry, position, retryAfter] = m;
  assert.equal(position, before, 'the start position is the newest notification');
  assert.ok(Number(retry) >= Number(retryAfter) * 1000, `retry ${retry} ms >= Retry-After ${retryAfter} s`);
  assert.equal(refusal.headers['last-event-id'], undefined, 'the page had no cursor');

  // Published while the page waits: it must not be lost.
  const waited = await publish(gw.base, USER, orderUpdate('ready', { otp: '481516', orderNumber: 'L2' }));
  other.close();
  await waitFor('the other client to leave', async () => (await metric(gw.base, 'notify_connections_open')) === 0);
  assert.deepEqual(await plain.waitOrders(page, 1, 45000), ['L2']);
  await waitFor('the page\'s stream', async () => (await metric(gw.base, 'notify_connections_open')) === 1);
  const next = await publish(gw.base, USER, orderUpdate('collected', { orderNumber: 'L3' }));
  assert.deepEqual(await plain.waitOrders(page, 2), ['L2', 'L3'], 'the missed one and the next, once, in order');

  const w = await plain.assertNeverClosed(assert, page);
  assert.deepEqual(w.ids, [waited, next]);
  const accepted = lb.subscribes().filter((e) => e.status === 200 && !e.done);
  assert.equal(accepted.length, 1, 'one stream');
  assert.equal(accepted[0].headers['last-event-id'], position, 'the browser came back from the refusal\'s id');
  assert.equal(await metric(gw.base, 'notify_connections_rejected_total'), lb.softRefusals().length);
});

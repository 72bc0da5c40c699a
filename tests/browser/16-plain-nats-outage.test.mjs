// The plain page through a 20 s NATS outage during which its connection
// drops: every reconnect gets a `bus_unavailable` soft refusal (no id: the
// browser keeps its cursor), so the EventSource stays alive and keeps
// retrying by itself. A producer keeps publishing with an Idempotency-Key
// (stored once NATS is back), then some more; once NATS is back the page
// resumes and has everything, once, in order.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startStatic, launchBrowser, mintToken, orderUpdate, waitFor, metric, request, waitJoined,
} from './lib/harness.mjs';
import {
  PLAIN_HTML, openPlain, plain, startReverseProxy, startNatsSingle, steadyPublisher,
} from './lib/plain.mjs';

const USER = 'student-outage';
const OUTAGE_MS = 20000;

test('plain page: a 20 s NATS outage while it reconnects, then it recovers by itself with nothing lost', { timeout: 240000 }, async (t) => {
  const res = resources(t, 'plain-nats-outage');
  const pages = await startStatic(res, { '/plain.html': PLAIN_HTML });
  const nats = await startNatsSingle(res);
  const gw = await startGateway(res, { NOTIFY_NATS_URL: nats.url, NOTIFY_CORS_ORIGINS: pages.origin, ...nats.gatewayEnv });
  const lb = await startReverseProxy(res, gw.port);
  const token = mintToken({ user: USER });

  const browser = await launchBrowser(res);
  const page = await openPlain(browser, pages.origin, lb.base, token);
  await waitFor('the page\'s stream', async () => (await metric(gw.base, 'notify_connections_open')) === 1);
  await waitJoined(gw.base);
  const producer = steadyPublisher(res, () => gw.base, USER,
    (n) => orderUpdate('preparing', { orderNumber: `N${n}` }), { everyMs: 500, tag: 'outage' });
  await waitFor('deliveries before the outage', async () => (await plain.orders(page)).length >= 3);

  // NATS goes away; the page's connection drops and it reconnects into the outage.
  await nats.stop();
  const downAt = Date.now();
  await waitFor('/readyz 503', async () => (await request(`${gw.base}/readyz`)).status === 503);
  const before = lb.subscribes().length;
  lb.cut();
  await waitFor(`${OUTAGE_MS} ms of outage with the page refused softly meanwhile`, () =>
    Date.now() - downAt >= OUTAGE_MS && lb.softRefusals('bus_unavailable').length >= 3,
  { timeout: OUTAGE_MS + 30000, interval: 200 });
  const during = lb.subscribes().slice(before);
  for (const r of lb.softRefusals('bus_unavailable')) {
    assert.match(r.body, /^retry: \d+\n\nevent: unavailable\ndata: \{"error":"bus_unavailable","retryAfter":2\}\n\n$/);
    assert.ok(r.headers['last-event-id'], 'the browser\'s reconnect carries its cursor');
  }
  assert.ok(during.every((r) => r.status === 200), `every answer during the outage is a 200: ${during.map((r) => r.status)}`);

  await nats.start();
  await waitFor('/readyz 200', async () => (await request(`${gw.base}/readyz`)).status === 200, { timeout: 30000 });
  await waitFor('the page back on its stream', async () => (await metric(gw.base, 'notify_connections_open')) === 1,
    { timeout: 30000 });
  const target = producer.published.length + 3;
  await waitFor('deliveries after the outage', async () => (await plain.orders(page)).length >= target, { timeout: 30000 });

  const published = await producer.stop();
  const expected = published.map((p) => p.order);
  const shown = await plain.waitOrders(page, expected.length);
  assert.deepEqual(shown, expected, 'everything, once, in order');
  const w = await plain.assertNeverClosed(assert, page);
  assert.deepEqual(w.ids, published.map((p) => p.id));
  t.diagnostic(`${published.length} notifications; ${lb.softRefusals('bus_unavailable').length} bus_unavailable soft refusals during ${Date.now() - downAt} ms`);
});

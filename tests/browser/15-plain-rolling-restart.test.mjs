// The plain page through a rolling restart of a 2-node NATS-backed cluster
// behind a load balancer that keeps routing to the draining node for a
// while: each draining node ends the page's stream, answers the browser's
// reconnects with a `draining` soft refusal (no id: the browser keeps its
// cursor) until the balancer moves on, and the browser resumes on the other
// node by itself. A producer publishes steadily throughout; the page gets
// every notification exactly once, in order, and its EventSource never
// reaches CLOSED.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startStatic, launchBrowser, mintToken, orderUpdate, waitFor, metric, waitJoined,
} from './lib/harness.mjs';
import {
  PLAIN_HTML, openPlain, plain, startReverseProxy, startNatsSingle, steadyPublisher,
} from './lib/plain.mjs';

const USER = 'student-rolling';

test('plain page: a rolling restart behind a lagging load balancer loses nothing', { timeout: 240000 }, async (t) => {
  const res = resources(t, 'plain-rolling-restart');
  const pages = await startStatic(res, { '/plain.html': PLAIN_HTML });
  const nats = await startNatsSingle(res);
  // The node keeps listening (answering `draining`) for grace - 1.5 s.
  const env = { NOTIFY_NATS_URL: nats.url, NOTIFY_CORS_ORIGINS: pages.origin, NOTIFY_SHUTDOWN_GRACE: '20s', ...nats.gatewayEnv };
  let nodeA = await startGateway(res, env, { name: 'nodeA' });
  const nodeB = await startGateway(res, env, { name: 'nodeB' });
  const lb = await startReverseProxy(res, nodeA.port);
  const token = mintToken({ user: USER });

  const browser = await launchBrowser(res);
  const page = await openPlain(browser, pages.origin, lb.base, token);
  await waitFor('the page\'s stream on node A', async () => (await metric(nodeA.base, 'notify_connections_open')) === 1);
  await waitJoined(nodeA.base);

  let publishVia = nodeB.base;
  const producer = steadyPublisher(res, () => publishVia, USER,
    (n) => orderUpdate('preparing', { orderNumber: `R${n}` }), { tag: 'rolling' });
  await waitFor('a first delivery', async () => (await plain.orders(page)).length >= 2);

  // Rolls `node` while the balancer still sends the browser there, until
  // two `draining` refusals came from it; then the balancer moves to `next`.
  async function roll(node, next) {
    const refusedBefore = lb.softRefusals('draining').length;
    node.child.kill('SIGTERM');
    await waitFor(`two draining refusals from ${node.name}`, () =>
      lb.softRefusals('draining').filter((e) => e.target === node.port).length >= 2, { timeout: 30000 });
    for (const r of lb.softRefusals('draining').slice(refusedBefore)) {
      assert.match(r.body, /^retry: \d+\n\nevent: unavailable\ndata: \{"error":"draining","retryAfter":1\}\n\n$/,
        'no id line: the browser keeps its own cursor');
      assert.ok(r.headers['last-event-id'], 'the browser\'s reconnect carries its cursor');
    }
    lb.target = next.port;
    await waitFor(`the page's stream on ${next.name}`, async () => (await metric(next.base, 'notify_connections_open')) === 1,
      { timeout: 30000 });
    const exit = await node.child.exited;
    assert.equal(exit.code, 0, `${node.name} exits cleanly`);
  }

  await roll(nodeA, nodeB);
  nodeA = await startGateway(res, env, { name: 'nodeA2' });
  publishVia = nodeA.base;
  const afterA = producer.published.length + 2;
  await waitFor('deliveries after node A rolled', async () => (await plain.orders(page)).length >= afterA, { timeout: 30000 });
  await roll(nodeB, nodeA);
  const afterB = producer.published.length + 2;
  await waitFor('deliveries after node B rolled', async () => (await plain.orders(page)).length >= afterB, { timeout: 30000 });

  const published = await producer.stop();
  const expected = published.map((p) => p.order);
  const shown = await plain.waitOrders(page, expected.length, 30000);
  assert.deepEqual(shown, expected, 'every notification exactly once, in order');
  const w = await plain.assertNeverClosed(assert, page);
  assert.deepEqual(w.ids, published.map((p) => p.id));
  assert.ok(lb.softRefusals('draining').length >= 4);
  t.diagnostic(`${published.length} notifications during the roll; ${lb.softRefusals('draining').length} draining soft refusals; ${lb.subscribes().length} subscribe requests`);
});

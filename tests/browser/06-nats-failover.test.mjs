// A NATS JetStream cluster (3 servers, R3 stream) and two gateway nodes
// behind a TCP proxy (the "load balancer"). The tab is connected to node 1;
// node 1 is killed (SIGKILL), a notification is published through node 2
// while the tab has no node, the proxy now sends new connections to node 2,
// and the browser's own reconnect (Last-Event-ID) resumes there without loss.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startNatsCluster, startProxy, launchBrowser, newTab, mintToken, publish,
  orderUpdate, demo, waitFor, metric, assertNoDupIncreasing,
} from './lib/harness.mjs';

const USER = 'student-failover';

test('NATS cluster: after its node dies the tab resumes on the other node without loss', { timeout: 100000 }, async (t) => {
  const res = resources(t, 'nats-failover');
  const nats = await startNatsCluster(res);
  const env = { NOTIFY_NATS_URL: nats.urls, NOTIFY_STREAM_REPLICAS: '3', ...nats.gatewayEnv };
  const node1 = await startGateway(res, env, { name: 'node1' });
  const node2 = await startGateway(res, env, { name: 'node2' });
  const lb = await startProxy(res, node1.port);
  const token = mintToken({ user: USER });

  const browser = await launchBrowser(res);
  const page = await newTab(browser);
  await page.goto(`${lb.base}/?token=${encodeURIComponent(token)}`);
  await demo.waitState(page, 'live');
  await waitFor('the stream on node 1', async () => (await metric(node1.base, 'notify_connections_open')) === 1);

  // Published through node 2, delivered by node 1 (cross-node over NATS).
  const a = await publish(node2.base, USER, orderUpdate('accepted'));
  assert.deepEqual(await demo.waitIds(page, 1), [a]);

  // Node 1 dies; the load balancer has no healthy node for a moment.
  lb.down = true;
  await node1.kill9();
  await demo.waitState(page, 'reconnecting');
  const b = await publish(node2.base, USER, orderUpdate('preparing'));
  const c = await publish(node2.base, USER, orderUpdate('ready', { otp: '731904' }));
  await waitFor('a refused reconnect attempt', () => lb.refused >= 1);
  assert.deepEqual(await demo.ids(page), [a]);

  // The load balancer now routes to node 2.
  const before = lb.subscribeRequests().length;
  lb.target = node2.port;
  lb.down = false;
  await demo.waitIds(page, 3, 20000);
  await demo.waitState(page, 'live');
  assert.equal(await metric(node2.base, 'notify_connections_open'), 1, 'the tab is on node 2');
  const d = await publish(node2.base, USER, orderUpdate('collected'));
  await demo.waitIds(page, 4);
  const ids = await demo.ids(page);
  assert.deepEqual(ids, [a, b, c, d], 'every notification exactly once, in order');
  assertNoDupIncreasing(assert, ids, 'received');
  assert.equal((await demo.shown(page))[2].otp, '731904');

  const after = lb.subscribeRequests().slice(before);
  assert.equal(after.length, 1, 'one reconnect');
  assert.equal(after[0].headers['last-event-id'], a, 'the browser\'s own reconnect with Last-Event-ID');
  assert.ok(!after[0].path.includes('lastEventId'));
});

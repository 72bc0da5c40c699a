// The client library in a NATS JetStream cluster (3 servers, R3 stream) with
// two gateway nodes behind a TCP proxy (the "load balancer"). Node 1, which
// holds the tab's stream, is killed; the browser's own reconnect finds no
// node for a while, then the balancer routes to node 2, which answers hard
// 503 refusals with Retry-After for a while (as a node that is not ready
// yet, or one without soft refusals, does): the native EventSource gives up,
// the library reads the status and Retry-After, backs off and opens a new
// EventSource with lastEventId on node 2. Every notification published
// meanwhile arrives exactly once, in order.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startTwoNodes, launchBrowser, mintToken, publish, orderUpdate, waitFor, metric,
  libraryTab, lib, eventSourceRequests, assertNoDupIncreasing, waitJoined,
} from './lib/harness.mjs';

const USER = 'student-client-failover';
const SUBSCRIBE = /^\/api\/notifications\/subscribe/;

test('client library: node dies, the next node refuses with 503 for a while, the library resumes there without loss', { timeout: 120000 }, async (t) => {
  const res = resources(t, 'client-nats-failover');
  const { node1, node2, lb } = await startTwoNodes(res);
  const token = mintToken({ user: USER });
  const browser = await launchBrowser(res);
  const page = await libraryTab(browser, lb.base, async () => token, { backoff: { initialMs: 500, maxMs: 4000 } });
  await waitFor('the stream on node 1', async () => (await metric(node1.base, 'notify_connections_open')) === 1);
  await waitJoined(node1.base);

  const a = await publish(node2.base, USER, orderUpdate('accepted'));
  assert.deepEqual(await lib.waitGot(page, 1), [a]);

  // Node 1 dies; the balancer has no node for a moment.
  lb.down = true;
  await node1.kill9();
  await lib.waitState(page, 'reconnecting');
  const b = await publish(node2.base, USER, orderUpdate('preparing'));
  await waitFor('a failed reconnect attempt', () => lb.refused >= 1);

  // The balancer routes to node 2, which refuses streams for now.
  const before = lb.requests.length;
  lb.refuse = { path: SUBSCRIBE, status: 503, retryAfter: 1, body: { error: 'bus_unavailable', message: 'not ready' } };
  lb.target = node2.port;
  lb.down = false;
  const refusedAfter = () => lb.requests.slice(before).filter((r) => r.refusedWith === 503);
  await waitFor('two refused EventSources and the library\'s probes', () => {
    const r = refusedAfter();
    return r.filter((x) => x.headers.accept === 'text/event-stream').length >= 2 &&
      r.some((x) => x.headers.accept === 'application/json');
  }, { timeout: 30000 });
  const c = await publish(node2.base, USER, orderUpdate('ready', { otp: '502503' }));
  assert.deepEqual(await lib.got(page), [a], 'nothing can arrive while refused');

  // Node 2 accepts streams again.
  lb.refuse = null;
  await lib.waitGot(page, 3, 30000);
  await lib.waitState(page, 'live');
  await waitFor('the stream on node 2', async () => (await metric(node2.base, 'notify_connections_open')) === 1);
  const d = await publish(node2.base, USER, orderUpdate('collected'));
  await lib.waitGot(page, 4);
  const got = await lib.got(page);
  assert.deepEqual(got, [a, b, c, d], 'every notification exactly once, in order');
  assertNoDupIncreasing(assert, got, 'received');
  const otp = (await lib.log(page, 'message')).find((m) => m.id === c).otp;
  assert.equal(otp, '502503');

  // How: the browser's own reconnect (Last-Event-ID) got the first 503 and
  // gave up; the library then opened new EventSources with lastEventId.
  const streams = eventSourceRequests(lb).filter((r) => lb.requests.indexOf(r) >= before);
  const refusedStreams = streams.filter((r) => r.refusedWith === 503);
  assert.equal(refusedStreams[0].headers['last-event-id'], a, 'the browser\'s own reconnect was refused first');
  for (const r of refusedStreams.slice(1)) {
    assert.equal(new URL(r.path, 'http://x').searchParams.get('lastEventId'), a, 'a new EventSource from the last id');
  }
  const accepted = streams.filter((r) => r.refusedWith === null);
  assert.equal(accepted.length, 1, 'one stream once node 2 accepts');
  assert.equal(new URL(accepted[0].path, 'http://x').searchParams.get('lastEventId'), a);
  assert.equal(accepted[0].headers['last-event-id'], undefined, 'a new EventSource, not the browser\'s reconnect');
  const errors = await lib.log(page, 'error');
  assert.ok(errors.some((e) => e.code === 'refused' && e.status === 503 && !e.fatal), JSON.stringify(errors));
  const states = (await lib.log(page, 'state')).map((e) => e.state);
  assert.ok(!states.includes('closed'), `never closed: ${states.join(' → ')}`);
});

// The connection is cut (a TCP proxy between Chromium and the gateway drops
// it and then refuses connections: the "server is gone"). Notifications
// published during the outage arrive exactly once through the browser's OWN
// automatic reconnect, which sends Last-Event-ID: the page never opens a new
// EventSource, and the reconnect URL carries no lastEventId parameter.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startProxy, launchBrowser, newTab, mintToken, publish, orderUpdate,
  demo, waitFor, RECORD_STATES, assertNoDupIncreasing,
} from './lib/harness.mjs';

const USER = 'student-cut';

test('connection cut: the browser reconnects with Last-Event-ID and shows what was missed exactly once', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'cut-resume');
  const gw = await startGateway(res);
  const proxy = await startProxy(res, gw.port);
  const token = mintToken({ user: USER });

  const browser = await launchBrowser(res);
  await browser.addInitScript(RECORD_STATES);
  const page = await newTab(browser);
  await page.goto(`${proxy.base}/?token=${encodeURIComponent(token)}`);
  await demo.waitState(page, 'live');

  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  assert.deepEqual(await demo.waitIds(page, 1), [a]);

  // Outage: drop every connection and refuse new ones.
  proxy.down = true;
  proxy.cut();
  await demo.waitState(page, 'reconnecting');
  const b = await publish(gw.base, USER, orderUpdate('preparing'));
  const c = await publish(gw.base, USER, orderUpdate('ready', { otp: '480913' }));
  // The browser has tried to reconnect during the outage, and failed.
  await waitFor('a refused reconnect attempt', () => proxy.refused >= 1, { timeout: 15000 });
  assert.deepEqual(await demo.ids(page), [a], 'nothing can arrive during the outage');
  assert.equal(await demo.state(page), 'reconnecting');

  // Back: the browser's own reconnect replays b and c.
  const before = proxy.subscribeRequests().length;
  proxy.down = false;
  await demo.waitIds(page, 3, 20000);
  await demo.waitState(page, 'live');
  const d = await publish(gw.base, USER, orderUpdate('collected'));
  await demo.waitIds(page, 4);
  const ids = await demo.ids(page);
  assert.deepEqual(ids, [a, b, c, d], 'every notification exactly once, in order');
  assertNoDupIncreasing(assert, ids, 'received');
  const shown = await demo.shown(page);
  assert.deepEqual(shown.map((n) => n.id), [a, b, c, d]);
  assert.equal(shown[2].otp, '480913');

  // How it got there: the first stream had no Last-Event-ID; the one request
  // that reached the server after the outage is the browser's own reconnect
  // (same URL, no lastEventId query) carrying Last-Event-ID: a.
  const subs = proxy.subscribeRequests();
  assert.equal(subs[0].headers['last-event-id'], undefined);
  const after = subs.slice(before);
  assert.equal(after.length, 1, `one reconnect after the outage: ${JSON.stringify(after.map((r) => r.headers['last-event-id']))}`);
  assert.equal(after[0].headers['last-event-id'], a, 'Last-Event-ID of the reconnect');
  assert.equal(after[0].path, subs[0].path, 'the browser reconnects with its original URL');
  assert.ok(!after[0].path.includes('lastEventId'), 'no lastEventId query: not a new EventSource');
  const states = await demo.states(page);
  assert.ok(!states.slice(states.indexOf('live')).includes('closed'),
    `the EventSource never gave up (states: ${states.join(' → ')})`);
});

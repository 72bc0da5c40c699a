// static/leader-tab.js (served at /leader-tab.js): three tabs of a page that
// uses subscribeShared() — one leader tab holds the only EventSource (the
// server sees ONE stream) and shares every event with the other tabs over
// BroadcastChannel; Web Locks elect the leader. Closing the leader tab hands
// over to another tab, which resumes with lastEventId: no loss, no duplicate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startProxy, launchBrowser, newTab, mintToken, publish, orderUpdate,
  waitFor, metric, waitJoined,
} from './lib/harness.mjs';

const USER = 'student-leader';

// The snippet a frontend would use (README "Many tabs").
const leaderPage = (subscribeUrl) => `<!doctype html>
<meta charset="utf-8"><title>leader-tab test</title>
<ul id="log"></ul>
<script type="module">
  import { subscribeShared } from '/leader-tab.js';
  window.got = [];
  window.sub = subscribeShared(${JSON.stringify(subscribeUrl)}, (msg) => {
    window.got.push(msg);
    const li = document.createElement('li');
    li.textContent = msg.type + ' ' + msg.id;
    document.getElementById('log').appendChild(li);
  });
</script>`;

const messages = (page) => page.evaluate(() => window.got.filter((m) => m.type === 'message').map((m) => m.id));
const isLeader = (page) => page.evaluate(() => window.sub.isLeader());

test('leader tab: one stream for three tabs, every tab gets every notification, hand-over without loss', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'leader-tab');
  const gw = await startGateway(res);
  const proxy = await startProxy(res, gw.port); // to watch the stream requests
  const token = mintToken({ user: USER });
  const html = leaderPage(`/api/notifications/subscribe?token=${encodeURIComponent(token)}`);

  const browser = await launchBrowser(res);
  const tabs = [];
  for (let i = 0; i < 3; i++) {
    const page = await newTab(browser);
    await page.goto(`${proxy.base}/healthz`); // any document of the gateway's origin
    await page.setContent(html);
    await page.waitForFunction(() => window.sub !== undefined);
    tabs.push(page);
  }
  await waitFor('one leader', async () => (await Promise.all(tabs.map(isLeader))).filter(Boolean).length === 1);
  await waitFor('the leader\'s stream', async () => (await metric(gw.base, 'notify_connections_open')) === 1);
  await waitJoined(gw.base);

  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  const b = await publish(gw.base, USER, orderUpdate('preparing'));
  for (const page of tabs) {
    await waitFor('two notifications in every tab', async () => (await messages(page)).length >= 2);
    assert.deepEqual(await messages(page), [a, b]);
  }
  assert.equal(await metric(gw.base, 'notify_connections_open'), 1, 'one SSE connection for three tabs');
  assert.equal(proxy.subscribeRequests().length, 1);

  // The leader goes away; a notification is published during the hand-over.
  const leaders = await Promise.all(tabs.map(isLeader));
  const old = tabs[leaders.indexOf(true)];
  const rest = tabs.filter((p) => p !== old);
  await old.close();
  const c = await publish(gw.base, USER, orderUpdate('ready', { otp: '864200' }));
  await waitFor('a new leader', async () => (await Promise.all(rest.map(isLeader))).filter(Boolean).length === 1);
  await waitFor('the new leader\'s stream (and only it)', async () =>
    proxy.subscribeRequests().length === 2 && (await metric(gw.base, 'notify_connections_open')) === 1);
  const d = await publish(gw.base, USER, orderUpdate('collected'));
  for (const page of rest) {
    await waitFor('four notifications in every remaining tab', async () => (await messages(page)).length >= 4);
    assert.deepEqual(await messages(page), [a, b, c, d], 'no loss, no duplicate');
    assert.equal(await page.evaluate(() => window.sub.lastEventId()), d);
  }
  const second = proxy.subscribeRequests()[1];
  assert.equal(new URL(second.path, 'http://x').searchParams.get('lastEventId'), b,
    'the new leader resumes from the last id its tab had seen');
  assert.equal(await metric(gw.base, 'notify_connections_open'), 1);
});

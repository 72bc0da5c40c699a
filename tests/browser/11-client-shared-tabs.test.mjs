// Ten tabs of the demo page with &share=1 (the client library's leader-tab
// sharing): one tab holds the only EventSource (Web Locks), the others get
// every notification over a BroadcastChannel. The server sees ONE stream;
// every tab receives every notification once, in order. When the leader
// tab closes, another tab takes over and resumes from its last id.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startProxy, launchBrowser, newTab, mintToken, publish, orderUpdate,
  demo, waitFor, metric, eventSourceRequests,
} from './lib/harness.mjs';

const USER = 'student-shared-tabs';
const TABS = 10;

const isLeader = (page) => page.evaluate(() => window.campusbite.isLeader());
const leaders = async (pages) => (await Promise.all(pages.map(isLeader))).filter(Boolean).length;

test('client library: ten tabs share one stream through a leader tab, all receive everything, hand-over without loss', { timeout: 150000 }, async (t) => {
  const res = resources(t, 'client-shared-tabs');
  const gw = await startGateway(res);
  const proxy = await startProxy(res, gw.port); // to see the stream requests
  const token = mintToken({ user: USER });

  const browser = await launchBrowser(res);
  const tabs = [];
  for (let i = 0; i < TABS; i++) {
    const page = await newTab(browser);
    await page.goto(`${proxy.base}/?token=${encodeURIComponent(token)}&share=1`);
    tabs.push(page);
  }
  await waitFor('one leader', async () => (await leaders(tabs)) === 1, { timeout: 30000 });
  for (const page of tabs) await demo.waitState(page, 'live', 30000); // followers show their leader's state
  assert.equal(await metric(gw.base, 'notify_connections_open'), 1, 'one stream for ten tabs');

  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  const b = await publish(gw.base, USER, orderUpdate('preparing'));
  const c = await publish(gw.base, USER, orderUpdate('ready', { otp: '101010' }));
  for (const [i, page] of tabs.entries()) {
    await demo.waitIds(page, 3, 20000);
    assert.deepEqual(await demo.ids(page), [a, b, c], `tab ${i + 1}`);
    assert.equal((await demo.shown(page))[2].otp, '101010', `tab ${i + 1}: the OTP`);
  }
  assert.equal(await metric(gw.base, 'notify_connections_open'), 1);
  assert.equal(eventSourceRequests(proxy).length, 1, 'one EventSource request in all');

  // The leader tab closes; one more is published during the hand-over.
  const old = tabs[(await Promise.all(tabs.map(isLeader))).indexOf(true)];
  const rest = tabs.filter((p) => p !== old);
  await old.close();
  const d = await publish(gw.base, USER, orderUpdate('collected'));
  await waitFor('a new leader', async () => (await leaders(rest)) === 1, { timeout: 30000 });
  await waitFor('the new leader\'s stream, and only it', async () =>
    eventSourceRequests(proxy).length === 2 && (await metric(gw.base, 'notify_connections_open')) === 1,
  { timeout: 30000 });
  const e = await publish(gw.base, USER, orderUpdate('cancelled'));
  for (const [i, page] of rest.entries()) {
    await demo.waitIds(page, 5, 20000);
    assert.deepEqual(await demo.ids(page), [a, b, c, d, e], `remaining tab ${i + 1}: no loss, no duplicate`);
    assert.equal(await demo.state(page), 'live');
  }
  const second = eventSourceRequests(proxy)[1];
  assert.equal(new URL(second.path, 'http://x').searchParams.get('lastEventId'), c,
    'the new leader resumes from the last id it had seen');
  assert.equal(await metric(gw.base, 'notify_connections_open'), 1);
});

// A tab that has received nothing yet — only the id-only start frame — is
// cut off; a notification published meanwhile still arrives through the
// browser's own reconnect, because the browser recorded the start frame's id
// and sends it as Last-Event-ID (the page itself knows no id at all).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startProxy, launchBrowser, newTab, mintToken, publish, orderUpdate,
  demo, waitFor,
} from './lib/harness.mjs';

const USER = 'student-fresh';

test('start frame: a tab cut off before its first notification still gets what was published meanwhile', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'start-frame');
  const gw = await startGateway(res);
  const proxy = await startProxy(res, gw.port);
  const token = mintToken({ user: USER });

  const browser = await launchBrowser(res);
  const page = await newTab(browser);
  await page.goto(`${proxy.base}/?token=${encodeURIComponent(token)}`);
  await demo.waitState(page, 'live');

  // The start frame went through: `id: <n>` and a blank line, no data (in
  // an HTTP/1.1 chunk, so it follows the chunk-size line).
  const first = proxy.subscribeRequests()[0];
  const startId = await waitFor('the id-only start frame', () => {
    const m = proxy.responses[first.conn].match(/\nid: (\d+)\n\n/);
    return m && m[1];
  });
  assert.deepEqual(await demo.ids(page), [], 'nothing received yet');
  assert.equal(await demo.lastEventId(page), null, 'the page itself has no id to resume from');

  proxy.down = true;
  proxy.cut();
  await demo.waitState(page, 'reconnecting');
  const x = await publish(gw.base, USER, orderUpdate('ready', { otp: '246810' }));
  assert.ok(BigInt(x) > BigInt(startId), `published id ${x} is after the start position ${startId}`);
  await waitFor('a refused reconnect attempt', () => proxy.refused >= 1);
  assert.deepEqual(await demo.ids(page), []);

  proxy.down = false;
  await demo.waitIds(page, 1, 20000);
  await demo.waitState(page, 'live');
  const y = await publish(gw.base, USER, orderUpdate('collected'));
  await demo.waitIds(page, 2);
  assert.deepEqual(await demo.ids(page), [x, y], 'the missed notification, exactly once, then live');
  const shown = await demo.shown(page);
  assert.equal(shown[0].otp, '246810');

  const subs = proxy.subscribeRequests();
  const reconnect = subs.find((r) => r.conn !== first.conn);
  assert.ok(reconnect, 'the browser reconnected');
  assert.equal(reconnect.headers['last-event-id'], startId, 'Last-Event-ID is the start frame id');
  assert.ok(!reconnect.path.includes('lastEventId'), 'the browser\'s own reconnect, not a new EventSource');
});

// A reset with the client library: the gateway keeps only 2 notifications
// per user. The tab is cut off while 4 are published, so its last id is
// older than the history: on reconnect the server sends `event: reset`
// (the library calls onReset, and the page would refetch its orders), then
// replays what it still has, then continues live.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, libraryOnProxy, publish, orderUpdate, waitFor, lib,
} from './lib/harness.mjs';

const USER = 'student-client-reset';

test('client library: history truncated while away, onReset fires once, then the replay and live', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'client-reset');
  const { gw, proxy, page } = await libraryOnProxy(res, USER, { NOTIFY_HISTORY_DEPTH: '2' });
  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  assert.deepEqual(await lib.waitGot(page, 1), [a]);

  proxy.down = true;
  proxy.cut();
  await lib.waitState(page, 'reconnecting');
  const away = [];
  for (const status of ['preparing', 'ready', 'collected', 'cancelled']) {
    away.push(await publish(gw.base, USER, orderUpdate(status, { otp: status === 'ready' ? '777000' : undefined })));
  }
  await waitFor('a failed reconnect attempt', () => proxy.refused >= 1);
  assert.equal((await lib.log(page, 'reset')).length, 0);

  proxy.down = false;
  await lib.waitGot(page, 3, 20000);
  await lib.waitState(page, 'live');
  const f = await publish(gw.base, USER, orderUpdate('accepted', { orderNumber: 'CB20240115002' }));
  await lib.waitGot(page, 4);
  assert.deepEqual(await lib.got(page), [a, away[2], away[3], f], 'the 2 retained, then live');
  const resets = await lib.log(page, 'reset');
  assert.equal(resets.length, 1, 'onReset once');
  assert.deepEqual(resets[0].info, { reason: 'history_truncated' });
  assert.equal(resets[0].after, a, 'onReset came before the replay');
  assert.equal(await page.evaluate(() => window.client.lastEventId), f);
});

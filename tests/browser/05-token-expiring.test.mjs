// Token lifetime: `event: token-expiring` reaches the demo page, which calls
// window.renewToken() (here: the test mints a fresh token — and publishes a
// notification while the renewal is in flight), then opens a new EventSource
// with the new token and lastEventId. Nothing is lost or shown twice, and the
// page stays live past the first token's expiry.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  resources, startGateway, startProxy, launchBrowser, newTab, mintToken, tokenExp, publish,
  orderUpdate, demo, waitFor, metric, assertNoDupIncreasing,
} from './lib/harness.mjs';

const USER = 'student-renew';

test('token-expiring: the page renews its token and carries on without losing a notification', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'token-expiring');
  const gw = await startGateway(res, { NOTIFY_TOKEN_EXPIRY_WARNING: '8s', NOTIFY_JWT_LEEWAY: '0s' });
  const proxy = await startProxy(res, gw.port); // only to watch the requests

  const browser = await launchBrowser(res);
  const renewals = []; // {at, token}
  let duringRenewal = null;
  // The renewal waits until the test has seen the first notification arrive
  // (so the order of events does not depend on how fast the machine is).
  let openGate;
  const gate = new Promise((r) => { openGate = r; });
  await browser.exposeFunction('__mintToken', async () => {
    const at = Date.now();
    await gate;
    // A notification published while the page is renewing.
    duringRenewal = await publish(gw.base, USER, orderUpdate('preparing'));
    const token = mintToken({ user: USER, ttl: '1h' });
    renewals.push({ at, token });
    return token;
  });
  await browser.addInitScript(() => { window.renewToken = () => window.__mintToken(); });

  const page = await newTab(browser);
  // token-expiring is due 4 s after this token is minted (12 s - 8 s).
  const t1 = mintToken({ user: USER, ttl: '12s' });
  await page.goto(`${proxy.base}/?token=${encodeURIComponent(t1)}`);
  await demo.waitState(page, 'live');
  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  assert.deepEqual(await demo.waitIds(page, 1), [a]);
  openGate();

  await waitFor('the page to renew its session', async () =>
    (await page.textContent('#token-notice-text')) === 'Session renewed.', { timeout: 20000 });
  assert.equal(await page.isVisible('#token-notice'), true);
  assert.equal(renewals.length, 1, 'renewToken called once');
  const t2 = renewals[0].token;
  assert.ok(renewals[0].at / 1000 < tokenExp(t1), 'renewed before the first token expired');
  await demo.waitState(page, 'live');

  // The new stream: the new token, resuming from the last id the page saw.
  await waitFor('the renewed stream', () => proxy.subscribeRequests().length >= 2);
  const [first, second] = proxy.subscribeRequests();
  const q1 = new URL(first.path, 'http://x').searchParams;
  const q2 = new URL(second.path, 'http://x').searchParams;
  assert.equal(q1.get('token'), t1);
  assert.match(proxy.responses[first.conn], /\nevent: token-expiring\ndata: \{"expiresAt":\d+\}\n/,
    'the first stream carried token-expiring');
  assert.equal(q2.get('token'), t2, 'the new EventSource uses the renewed token');
  assert.ok(q2.get('lastEventId') === a || q2.get('lastEventId') === duringRenewal,
    `resumes from the last id seen: ${q2.get('lastEventId')}`);

  // Past the first token's expiry the page is still live and receives.
  await waitFor('the first token to expire', () => Date.now() / 1000 > tokenExp(t1) + 1, { timeout: 15000 });
  const c = await publish(gw.base, USER, orderUpdate('ready', { otp: '112358' }));
  await demo.waitIds(page, 3);
  const ids = await demo.ids(page);
  assert.deepEqual(ids, [a, duringRenewal, c], 'no loss, no duplicate across the renewal');
  assertNoDupIncreasing(assert, ids, 'received');
  assert.equal(await demo.state(page), 'live');
  assert.equal(proxy.subscribeRequests().length, 2, 'no further reconnects');
  await waitFor('one open stream on the server', async () => (await metric(gw.base, 'notify_connections_open')) === 1);
  assert.equal((await demo.shown(page))[2].otp, '112358');
});

// The demo page as a student uses it: two tabs on the gateway's own origin
// and one on another (allowed) origin, each with the browser's own
// EventSource. "accepted" then "ready" show in every tab, in order, with the
// OTP for "ready". A page from an origin that is NOT allowed gets nothing
// (CORS is really enforced). Saves the screenshot artifact.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ARTIFACTS, DEMO_HTML, resources, startGateway, startStatic, launchBrowser, newTab,
  mintToken, publish, orderUpdate, demo, waitFor,
} from './lib/harness.mjs';

const USER = '507f1f77bcf86cd799439011';

test('demo page: two same-origin tabs and a cross-origin tab show accepted then ready with the OTP', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'demo-tabs-cors');
  const allowed = await startStatic(res, { '/': DEMO_HTML });
  const denied = await startStatic(res, { '/': DEMO_HTML });
  const gw = await startGateway(res, { NOTIFY_CORS_ORIGINS: allowed.origin });
  const token = mintToken({ user: USER });
  const q = `token=${encodeURIComponent(token)}`;

  const browser = await launchBrowser(res, { viewport: { width: 820, height: 900 } });
  const tabs = [];
  for (const url of [`${gw.base}/?${q}`, `${gw.base}/?${q}`,
    `${allowed.origin}/?${q}&server=${encodeURIComponent(gw.base)}`]) {
    const page = await newTab(browser);
    await page.goto(url);
    tabs.push(page);
  }
  const outsider = await newTab(browser);
  await outsider.goto(`${denied.origin}/?${q}&server=${encodeURIComponent(gw.base)}`);

  for (const page of tabs) await demo.waitState(page, 'live');
  // The page on a non-allowed origin: its EventSource fails (no
  // Access-Control-Allow-Origin), the page says so and schedules a retry.
  await waitFor('the outsider page to report a failed stream', async () =>
    /closed the stream/.test(await outsider.textContent('#state-detail')));
  assert.notEqual(await demo.state(outsider), 'live');

  const accepted = await publish(gw.base, USER, orderUpdate('accepted'));
  const ready = await publish(gw.base, USER, orderUpdate('ready', { otp: '123456' }));

  for (const [i, page] of tabs.entries()) {
    const label = ['tab 1 (same origin)', 'tab 2 (same origin)', 'tab 3 (other origin, CORS)'][i];
    await demo.waitIds(page, 2);
    assert.deepEqual(await demo.ids(page), [accepted, ready], `${label}: received ids`);
    const shown = await demo.shown(page);
    assert.deepEqual(shown.map((n) => [n.id, n.status, n.badge]),
      [[accepted, 'accepted', 'accepted'], [ready, 'ready', 'ready']], `${label}: list`);
    assert.equal(shown[0].title, 'Order Accepted', label);
    assert.equal(shown[0].otp, null, `${label}: no OTP for accepted`);
    assert.equal(shown[1].title, 'Order Ready for Pickup 🛍', label);
    assert.equal(shown[1].otp, '123456', `${label}: OTP text`);
    assert.ok(shown[1].otpVisible, `${label}: OTP visible`);
    assert.equal(await page.textContent('#count'), '2 received', label);
    assert.equal(await demo.state(page), 'live', label);
  }

  // Still nothing at the outsider (checked after the others have both).
  assert.deepEqual(await demo.ids(outsider), [], 'a non-allowed origin received notifications');
  assert.notEqual(await demo.state(outsider), 'live');

  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const shot = path.join(ARTIFACTS, 'demo.png');
  await tabs[0].screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10000, 'screenshot written');
  console.log(`screenshot: ${shot}`);
});

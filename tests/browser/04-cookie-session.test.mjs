// The cookie session across origins: the demo page on origin A (mode=cookie)
// POSTs its token to the gateway's /api/notifications/session (credentials:
// 'include') and opens EventSource(url, {withCredentials: true}) — no token
// in any stream URL. While the stream is cut off, the page renews the cookie
// with a new token; the first token then expires. The browser's own
// reconnect carries the NEW cookie and Last-Event-ID, and resumes without
// loss (with the old cookie it would get 401 and give up).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEMO_HTML, resources, startGateway, startProxy, startStatic, launchBrowser, newTab, mintToken,
  tokenExp, publish, orderUpdate, demo, waitFor, RECORD_STATES,
} from './lib/harness.mjs';

const USER = 'student-cookie';
const COOKIE = 'campusbite_notify';
const SUBSCRIBE = /^\/api\/notifications\/subscribe/;

function cookieValue(header) {
  const m = (header || '').match(new RegExp(`(?:^|;\\s*)${COOKIE}=([^;]*)`));
  return m ? m[1] : null;
}

test('cookie session across origins: renewed while cut off, the browser\'s own reconnect resumes without loss', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'cookie-session');
  const site = await startStatic(res, { '/': DEMO_HTML });
  const gw = await startGateway(res, { NOTIFY_CORS_ORIGINS: site.origin, NOTIFY_JWT_LEEWAY: '0s' });
  const proxy = await startProxy(res, gw.port);
  const t2 = mintToken({ user: USER, ttl: '1h' });

  const browser = await launchBrowser(res);
  await browser.addInitScript(RECORD_STATES);
  const page = await newTab(browser);
  const t1 = mintToken({ user: USER, ttl: '10s' }); // expires while the stream is cut off
  await page.goto(`${site.origin}/?mode=cookie&token=${encodeURIComponent(t1)}&server=${encodeURIComponent(proxy.base)}`);
  await demo.waitState(page, 'live');

  const sessionReqs = proxy.requests.filter((r) => r.path === '/api/notifications/session');
  assert.deepEqual(sessionReqs.map((r) => r.method), ['OPTIONS', 'POST'], 'CORS preflight, then the session POST');
  assert.equal(sessionReqs[1].headers.origin, site.origin, 'a cross-origin request');
  const [firstSub] = proxy.subscribeRequests();
  assert.ok(!/token=/.test(firstSub.path), `no token in the stream URL: ${firstSub.path}`);
  assert.equal(cookieValue(firstSub.headers.cookie), t1, 'the stream is authenticated by the session cookie');
  const cookies = await browser.cookies(proxy.base + '/api/notifications/subscribe');
  const jar = cookies.find((c) => c.name === COOKIE);
  assert.ok(jar && jar.httpOnly && jar.secure, `HttpOnly Secure cookie stored: ${JSON.stringify(cookies)}`);
  assert.equal(await page.evaluate(() => document.cookie.includes('campusbite_notify')), false, 'not readable by scripts');

  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  assert.deepEqual(await demo.waitIds(page, 1), [a]);

  // The stream is cut off; reconnects are refused for now.
  proxy.block = SUBSCRIBE;
  proxy.cut();
  await demo.waitState(page, 'reconnecting');
  const b = await publish(gw.base, USER, orderUpdate('preparing'));

  // The page renews its session with a new token (the session endpoint is reachable).
  const status = await page.evaluate(async ({ server, jwt }) => {
    const r = await fetch(server + '/api/notifications/session', {
      method: 'POST', headers: { Authorization: 'Bearer ' + jwt }, credentials: 'include',
    });
    return r.status;
  }, { server: proxy.base, jwt: t2 });
  assert.equal(status, 204);
  await waitFor('the renewed cookie in the browser', async () =>
    (await browser.cookies(proxy.base + '/api/notifications/subscribe')).some((c) => c.name === COOKIE && c.value === t2));

  // The first token is now past its expiry; the browser keeps retrying.
  await waitFor('the first token to expire', () => Date.now() / 1000 > tokenExp(t1) + 0.5, { timeout: 15000 });
  const blockedBefore = proxy.requests.filter((r) => r.blocked).length;
  await waitFor('another refused reconnect attempt', () => proxy.requests.filter((r) => r.blocked).length > blockedBefore);
  const c = await publish(gw.base, USER, orderUpdate('ready', { otp: '975310' }));
  assert.deepEqual(await demo.ids(page), [a]);

  const seen = proxy.requests.length;
  proxy.block = null;
  await demo.waitIds(page, 3, 20000);
  await demo.waitState(page, 'live');
  const d = await publish(gw.base, USER, orderUpdate('collected'));
  await demo.waitIds(page, 4);
  assert.deepEqual(await demo.ids(page), [a, b, c, d], 'every notification exactly once, in order');
  assert.equal((await demo.shown(page))[2].otp, '975310');

  const resumed = proxy.requests.slice(seen).filter((r) => SUBSCRIBE.test(r.path));
  assert.equal(resumed.length, 1, 'one reconnect');
  assert.equal(resumed[0].path, firstSub.path, 'the browser\'s own reconnect (original URL)');
  assert.equal(resumed[0].headers['last-event-id'], a, 'with Last-Event-ID');
  assert.equal(cookieValue(resumed[0].headers.cookie), t2, 'carrying the renewed cookie');
  const states = await demo.states(page);
  assert.ok(!states.slice(states.indexOf('live')).includes('closed'),
    `the EventSource never gave up (states: ${states.join(' → ')})`);
});

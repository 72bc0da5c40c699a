// Many tabs: over HTTPS the gateway speaks HTTP/2, so ten tabs of the demo
// page share one connection and all of them are live and receive every
// notification. Over plain HTTP/1.1 Chromium opens at most 6 connections per
// host, so with ten tabs only six streams are ever open: the other tabs hang.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  resources, startGateway, launchBrowser, newTab, mintToken, publish, orderUpdate, demo, waitFor, metric, establishedTo,
} from './lib/harness.mjs';

const USER = 'student-many-tabs';
const TABS = 10;

function selfSignedCert(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key };
}

/** page.evaluate that gives up (→ fallback) when the page is stuck loading. */
function evalOr(page, fn, fallback, ms = 3000) {
  return Promise.race([page.evaluate(fn).catch(() => fallback), new Promise((r) => setTimeout(() => r(fallback), ms))]);
}

test('HTTP/2: ten tabs over HTTPS are all live and all receive every notification', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'http2-tabs');
  const { cert, key } = selfSignedCert(res.tmpdir('tls'));
  const gw = await startGateway(res, { NOTIFY_TLS_CERT_FILE: cert, NOTIFY_TLS_KEY_FILE: key }, { tls: true });
  assert.ok(gw.base.startsWith('https://'));
  const token = mintToken({ user: USER });

  const browser = await launchBrowser(res, { args: ['--ignore-certificate-errors'] });
  const tabs = [];
  for (let i = 0; i < TABS; i++) {
    const page = await newTab(browser);
    await page.goto(`${gw.base}/?token=${encodeURIComponent(token)}`);
    tabs.push(page);
  }
  for (const page of tabs) await demo.waitState(page, 'live');
  for (const page of tabs) {
    assert.equal(await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');
  }
  await waitFor(`${TABS} open streams`, async () => (await metric(gw.base, 'notify_connections_open')) === TABS);
  // ...multiplexed over one TCP connection.
  await waitFor('one TCP connection from the browser', () => establishedTo(gw.port) === 1);

  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  const b = await publish(gw.base, USER, orderUpdate('ready', { otp: '100200' }));
  for (const [i, page] of tabs.entries()) {
    await demo.waitIds(page, 2);
    assert.deepEqual(await demo.ids(page), [a, b], `tab ${i + 1}`);
    assert.equal((await demo.shown(page))[1].otp, '100200', `tab ${i + 1}`);
  }
});

test('HTTP/1.1 (for contrast): with ten tabs at most six streams are open', { timeout: 90000 }, async (t) => {
  const res = resources(t, 'http1-tabs');
  const gw = await startGateway(res);
  const token = mintToken({ user: USER });
  const browser = await launchBrowser(res);
  const tabs = [];
  for (let i = 0; i < TABS; i++) tabs.push(await newTab(browser));
  // Tabs 7–10 never finish loading (their requests wait for a free connection).
  for (const page of tabs) page.goto(`${gw.base}/?token=${encodeURIComponent(token)}`, { timeout: 0 }).catch(() => {});

  await waitFor('six open streams', async () => (await metric(gw.base, 'notify_connections_open')) === 6, { timeout: 20000 });
  await waitFor('six TCP connections from the browser', () => establishedTo(gw.port) === 6);
  const a = await publish(gw.base, USER, orderUpdate('accepted'));
  const got = async () => (await Promise.all(tabs.map((p) => evalOr(p,
    () => (window.campusbite ? window.campusbite.received.length : 0), 0)))).filter((n) => n > 0).length;
  await waitFor('six tabs to receive it', async () => (await got()) === 6);
  assert.equal(await metric(gw.base, 'notify_connections_open'), 6, 'still six streams');
  const live = (await Promise.all(tabs.map((p) => evalOr(p, () => window.campusbite && window.campusbite.state(), null))))
    .filter((s) => s === 'live').length;
  assert.equal(live, 6, `live tabs over HTTP/1.1 (published ${a})`);
  assert.equal(await got(), 6, 'the other four tabs hang');
});

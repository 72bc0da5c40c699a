// Helpers for the plain-page tests (soft refusals): the one plain page,
// an init script that watches its EventSource without changing it, an HTTP
// reverse proxy whose upstream can be switched (a load balancer that keeps
// routing to a draining node until told), a single nats-server that can be
// stopped and started again on the same port and store, and publishers.

import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  ROOT, natsBin, freePorts, request, waitFor, mintToken, newTab,
} from './harness.mjs';

/** The plain page: the README's first pattern and nothing else. */
export const PLAIN_HTML = fs.readFileSync(path.join(ROOT, 'tests/browser/pages/plain.html'));

/**
 * Init script: wraps the EventSource constructor so the test sees every
 * instance, each readyState it takes (sampled on open/error and every
 * 20 ms) and the lastEventId of every message. The page's own code runs
 * unchanged.
 */
export const WATCH_EVENTSOURCE = `(() => {
  const Native = window.EventSource;
  const watch = window.__watch = { instances: 0, states: [], closed: false, opens: 0, errors: 0, ids: [] };
  const on = Native.prototype.addEventListener;
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      watch.instances++;
      const note = () => {
        const s = this.readyState;
        if (watch.states[watch.states.length - 1] !== s) watch.states.push(s);
        if (s === 2) watch.closed = true;
      };
      note();
      on.call(this, 'open', () => { watch.opens++; note(); });
      on.call(this, 'error', () => { watch.errors++; note(); });
      on.call(this, 'message', (e) => watch.ids.push(e.lastEventId));
      setInterval(note, 20);
    }
  };
})();`;

/** Opens the plain page (served from `pageOrigin`) for `api` and `token`. */
export async function openPlain(browser, pageOrigin, api, token) {
  const page = await newTab(browser);
  await page.addInitScript(WATCH_EVENTSOURCE);
  const q = new URLSearchParams({ api, token });
  await page.goto(`${pageOrigin}/plain.html?${q}`);
  return page;
}

export const plain = {
  /** The order numbers rendered, oldest first. */
  orders: (page) => page.$$eval('li.notification', (lis) => lis.map((li) => li.dataset.order)),
  /** What the watcher saw. */
  watch: (page) => page.evaluate(() => window.__watch),
  /**
   * The order numbers rendered once there are `count`, or those rendered
   * when `timeout` ms are up: every caller compares them with what it
   * expects, so a short page fails with the missing orders named.
   */
  async waitOrders(page, count, timeout = 30000) {
    try {
      return await waitFor(`${count} notifications on the plain page`, async () => {
        const o = await plain.orders(page);
        return o.length >= count ? o : false;
      }, { timeout, interval: 100 });
    } catch {
      return plain.orders(page);
    }
  },
  /** One EventSource, never CLOSED (2): the page never needed a reload. */
  async assertNeverClosed(assert, page) {
    const w = await plain.watch(page);
    assert.equal(w.instances, 1, 'the page opened exactly one EventSource');
    assert.equal(w.closed, false, `readyState reached CLOSED: states ${JSON.stringify(w.states)}`);
    assert.ok(!w.states.includes(2), `readyState history ${JSON.stringify(w.states)}`);
    return w;
  },
};

// ---- an HTTP reverse proxy -------------------------------------------------------

/**
 * An HTTP/1.1 reverse proxy on an ephemeral port that forwards each request
 * to `127.0.0.1:<target>` (switch with `proxy.target = port`), streaming
 * the response. `log` keeps every request: {path, headers, target, status,
 * body (first 64 KiB), done}. `cut()` destroys every client connection.
 */
export async function startReverseProxy(res, targetPort) {
  const sockets = new Set();
  const proxy = {
    target: targetPort,
    log: [],
    cut() {
      for (const s of sockets) s.destroy();
    },
    subscribes() {
      return this.log.filter((e) => e.path.startsWith('/api/notifications/subscribe'));
    },
    /** Finished soft refusals of subscribes, optionally only those with `code`. */
    softRefusals(code) {
      return this.subscribes().filter((e) => e.done && e.status === 200 && /\nevent: unavailable\n/.test(e.body)
        && (!code || e.body.includes(`"error":"${code}"`)));
    },
  };
  const server = http.createServer((req, rsp) => {
    const entry = { path: req.url, headers: req.headers, target: proxy.target, status: null, body: '', done: false, at: Date.now() };
    proxy.log.push(entry);
    const upstream = http.request({
      host: '127.0.0.1', port: proxy.target, method: req.method, path: req.url, headers: req.headers, agent: false,
    }, (up) => {
      entry.status = up.statusCode;
      rsp.writeHead(up.statusCode, up.headers);
      up.on('data', (c) => {
        if (entry.body.length < 65536) entry.body += c.toString('utf8');
        rsp.write(c);
      });
      up.on('end', () => { entry.done = true; rsp.end(); });
      up.on('error', () => rsp.destroy());
    });
    upstream.on('error', (e) => {
      entry.error = e.message;
      if (!rsp.headersSent) {
        rsp.writeHead(502, { 'Content-Type': 'text/plain' });
        rsp.end(`proxy: ${e.message}`);
      } else {
        rsp.destroy();
      }
    });
    rsp.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  proxy.port = server.address().port;
  proxy.base = `http://127.0.0.1:${proxy.port}`;
  res.defer(() => new Promise((r) => { proxy.cut(); server.close(() => r()); }));
  return proxy;
}

// ---- one nats-server that can be stopped and started again -------------------------

/**
 * One JetStream server with the shipped permission model
 * (cluster/render-nats-auth, generated passwords); `stop()` kills it,
 * `start()` brings it back on the same port and store. `gatewayEnv` holds
 * the gateway user's NOTIFY_NATS_USER/PASSWORD for startGateway.
 */
export async function startNatsSingle(res, name = 'nats') {
  const [port, monitor] = await freePorts(2);
  const store = res.tmpdir('nats-store');
  const conf = path.join(store, 'auth.conf');
  fs.writeFileSync(conf, execFileSync(path.join(ROOT, 'cluster/render-nats-auth'), [], { encoding: 'utf8' }));
  const secret = () => crypto.randomBytes(16).toString('hex');
  const gateway = { user: 'notify-gateway', password: secret() };
  const producer = { user: 'notify-producer', password: secret() };
  let runs = 0;
  const nats = {
    url: `nats://127.0.0.1:${port}`,
    gatewayEnv: { NOTIFY_NATS_USER: gateway.user, NOTIFY_NATS_PASSWORD: gateway.password },
    producer,
    child: null,
    async start() {
      runs += 1;
      this.child = res.spawn(`${name}-${runs}`, natsBin(), [
        '-c', conf,
        '-n', name, '-a', '127.0.0.1', '-p', String(port), '-m', String(monitor), '-js', '-sd', store,
      ], {
        env: {
          ...process.env,
          NATS_GATEWAY_USER: `"${gateway.user}"`,
          NATS_GATEWAY_PASSWORD: `"${gateway.password}"`,
          NATS_PRODUCER_USER: `"${producer.user}"`,
          NATS_PRODUCER_PASSWORD: `"${producer.password}"`,
        },
      });
      this.child.stdout.pipe(this.child.log, { end: false });
      await waitFor(`${name} JetStream ready`, async () =>
        (await request(`http://127.0.0.1:${monitor}/healthz?js-enabled-only=true`, { timeout: 2000 })).status === 200,
      { timeout: 30000, interval: 100 });
    },
    async stop() {
      await this.child.kill9();
    },
  };
  await nats.start();
  return nats;
}

// ---- producers and other clients -----------------------------------------------

let publisherToken = null;

/**
 * Publishes over HTTP with an Idempotency-Key, retrying (same key) until
 * the notification is stored: the producers' way through a bus outage.
 */
export async function publishStored(base, userId, notification, key, { deadline = 90000, cancelled = () => false } = {}) {
  publisherToken ??= mintToken({ publisher: true });
  const until = Date.now() + deadline;
  let last;
  for (;;) {
    try {
      const r = await request(`${base}/api/notifications/publish`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${publisherToken}`, 'Content-Type': 'application/json', 'Idempotency-Key': key },
        body: JSON.stringify({ userId, notification }),
        timeout: 30000,
      });
      if (r.status === 202) return JSON.parse(r.body).id;
      last = `${r.status} ${r.body}`;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > until || cancelled()) throw new Error(`publish ${key} never stored: ${last}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Publishes `order(n)` for n = 1, 2, … every `everyMs` through `base()`
 * until `stop()` (which resolves to the list of {order, id}, each stored).
 * Registered with `res`, so a failed test stops it too.
 */
export function steadyPublisher(res, base, userId, order, { everyMs = 250, tag = 'steady' } = {}) {
  const published = [];
  let stopping = false;
  let abandoned = false;
  const done = (async () => {
    for (let n = 1; !stopping; n++) {
      const notification = order(n);
      const id = await publishStored(base(), userId, notification, `${tag}-${n}`, { cancelled: () => abandoned });
      published.push({ order: notification.data.orderNumber, id });
      await new Promise((r) => setTimeout(r, everyMs));
    }
    return published;
  })();
  res.defer(() => {
    stopping = true;
    abandoned = true;
    return done.catch(() => {});
  });
  return {
    published,
    stop() {
      stopping = true;
      return done;
    },
  };
}

/**
 * Another client holding a stream of the user (an open tab elsewhere):
 * resolves once its start frame arrived; `close()` ends it.
 */
export function holdStream(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { Accept: 'text/event-stream' }, agent: false }, (rsp) => {
      let body = '';
      rsp.setEncoding('utf8');
      rsp.on('data', (c) => {
        body += c;
        if (/\nid: \d+\n\n/.test(body)) resolve({ close: () => req.destroy(), body: () => body });
      });
      rsp.on('end', () => reject(new Error(`the other client's stream ended: ${rsp.statusCode} ${body}`)));
    });
    req.on('error', reject);
  });
}

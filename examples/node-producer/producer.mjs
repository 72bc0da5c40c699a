// A CampusBite backend publishing order updates to campusbite-notify.
//
//   node producer.mjs nats <userId> <status> [orderId] [orderNumber] [otp]
//   node producer.mjs http <userId> <status> [orderId] [orderNumber] [otp]
//
// status: accepted | preparing | ready | collected | cancelled. orderId is
// the order's MongoDB ObjectId (24 hex digits; a new one when omitted).
// Prints one JSON line: {"via","userId","id","duplicate","notification"}:
// `id` is the event id the user's streams carry as `id:`.
//
// Environment:
//   NATS_URL (comma-separated), NATS_USER + NATS_PASSWORD or NATS_CREDS
//   (a .creds file), NOTIFY_SUBJECT_PREFIX (default campusbite.notify);
//   NOTIFY_URL (e.g. https://notify.campusbite.com) and
//   NOTIFY_PUBLISHER_TOKEN (a JWT with scope notifications:publish) for http;
//   PUBLISH_DEADLINE_MS: how long to keep retrying (default 60000).
//
// Both paths are at-least-once and never duplicate: the same order
// transition always carries the same Nats-Msg-Id / Idempotency-Key, so a
// retry after a timeout stores nothing twice and answers with the same id.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, credsAuthenticator } from "nats";

const STATUSES = {
  accepted: ["Order Accepted ✅", (n) => `The kitchen has accepted order ${n}.`],
  preparing: ["Order Being Prepared 👨‍🍳", (n) => `Order ${n} is being prepared.`],
  ready: ["Order Ready for Pickup 🛍", (n, otp) => `Order ${n} is ready. Show OTP ${otp} at the counter.`],
  collected: ["Order Collected 🎉", (n) => `Order ${n} has been collected. Enjoy your meal!`],
  cancelled: ["Order Cancelled", (n) => `Order ${n} was cancelled.`],
};

// Same rule as the gateway's: anything else could address another subject.
const USER_ID = /^[^$.*>\s\p{Cc}][^.*>\s\p{Cc}]*$/u;

/** The notification a browser receives for an order's new status. */
export function orderNotification({ orderId, orderNumber, status, otp }) {
  const entry = STATUSES[status];
  if (!entry) throw new Error(`unknown status ${status}`);
  const [title, message] = entry;
  const data = { orderId, orderNumber, status };
  if (status === "ready") data.otp = otp;
  return { type: "order_update", title, message: message(orderNumber, otp), data };
}

/** One key per order transition: retries of it are recognised as such. */
export function dedupeKey(orderId, status) {
  return `order-${orderId}-${status}`;
}

function checkUserId(userId) {
  if (!USER_ID.test(userId) || Buffer.byteLength(userId) > 256) {
    throw new Error(`invalid user id ${JSON.stringify(userId)}`);
  }
}

/** Connects with the settings of the environment (user/password or creds). */
export async function connectNats(env = process.env) {
  const options = {
    servers: (env.NATS_URL ?? "nats://127.0.0.1:4222").split(","),
    name: "campusbite-node-producer",
    waitOnFirstConnect: true,
    maxReconnectAttempts: -1,
  };
  if (env.NATS_CREDS) {
    options.authenticator = credsAuthenticator(readFileSync(env.NATS_CREDS));
  } else if (env.NATS_USER) {
    options.user = env.NATS_USER;
    options.pass = env.NATS_PASSWORD ?? "";
  }
  return connect(options);
}

/**
 * JetStream publish with Nats-Msg-Id, retried until the stream acks it.
 * Returns the event id (the stream sequence; for a duplicate, the original's).
 */
export async function publishNats(js, prefix, userId, notification, msgId, deadline) {
  checkUserId(userId);
  const subject = `${prefix}.user.${userId}`;
  const payload = new TextEncoder().encode(JSON.stringify(notification));
  for (let attempt = 0; ; attempt++) {
    try {
      const ack = await js.publish(subject, payload, { msgID: msgId, timeout: 5000 });
      return { id: String(ack.seq), duplicate: ack.duplicate };
    } catch (err) {
      // Timeouts and "no responders" (stream leader being elected) are worth
      // retrying; the Nats-Msg-Id makes a retry of a stored message a no-op.
      if (Date.now() > deadline) throw err;
      console.error(`publish to ${subject} failed (${err.message}); retrying`);
      await sleep(Math.min(200 * 2 ** attempt, 5000));
    }
  }
}

/**
 * HTTP publish with Idempotency-Key, retried with the same key on 503, 429,
 * timeouts and network errors. Returns the event id.
 */
export async function publishHttp(baseUrl, token, userId, notification, key, deadline) {
  checkUserId(userId);
  const body = JSON.stringify({ userId, notification });
  for (let attempt = 0; ; attempt++) {
    let wait = Math.min(200 * 2 ** attempt, 5000);
    try {
      const res = await fetch(new URL("/api/notifications/publish", baseUrl), {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "idempotency-key": key,
        },
        body,
        signal: AbortSignal.timeout(10_000),
      });
      const answer = await res.json().catch(() => ({}));
      if (res.status === 202) return { id: answer.id, duplicate: null };
      if (res.status !== 503 && res.status !== 429) {
        throw Object.assign(new Error(`HTTP ${res.status}: ${JSON.stringify(answer)}`), { final: true });
      }
      const retryAfter = Number(res.headers.get("retry-after"));
      if (retryAfter > 0) wait = retryAfter * 1000;
      if (Date.now() > deadline) throw new Error(`HTTP ${res.status}: ${JSON.stringify(answer)}`);
      console.error(`publish answered ${res.status}; retrying with the same Idempotency-Key`);
    } catch (err) {
      if (err.final || Date.now() > deadline) throw err;
      console.error(`publish failed (${err.message}); retrying with the same Idempotency-Key`);
    }
    await sleep(wait);
  }
}

async function main(argv, env) {
  const [via, userId, status, orderId = randomBytes(12).toString("hex"), orderNumber = "CB20240115001", otp = "123456"] = argv;
  if (!["nats", "http"].includes(via) || !userId || !STATUSES[status]) {
    console.error("usage: node producer.mjs <nats|http> <userId> <accepted|preparing|ready|collected|cancelled> [orderId] [orderNumber] [otp]");
    return 2;
  }
  if (!/^[0-9a-f]{24}$/.test(orderId)) {
    console.error(`orderId must be a 24-hex-digit ObjectId, got ${orderId}`);
    return 2;
  }
  const notification = orderNotification({ orderId, orderNumber, status, otp });
  const key = dedupeKey(orderId, status);
  const deadline = Date.now() + Number(env.PUBLISH_DEADLINE_MS ?? 60_000);
  let result;
  if (via === "nats") {
    const nc = await connectNats(env);
    try {
      const prefix = env.NOTIFY_SUBJECT_PREFIX ?? "campusbite.notify";
      result = await publishNats(nc.jetstream(), prefix, userId, notification, key, deadline);
    } finally {
      await nc.drain();
    }
  } else {
    if (!env.NOTIFY_PUBLISHER_TOKEN) {
      console.error("set NOTIFY_PUBLISHER_TOKEN to a publisher JWT");
      return 2;
    }
    const base = env.NOTIFY_URL ?? "http://127.0.0.1:8080";
    result = await publishHttp(base, env.NOTIFY_PUBLISHER_TOKEN, userId, notification, key, deadline);
  }
  console.log(JSON.stringify({ via, userId, ...result, notification }));
  return 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2), process.env).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`error: ${err.message}`);
      process.exit(1);
    },
  );
}

#!/usr/bin/env python3
"""A CampusBite backend publishing order updates to campusbite-notify.

    python producer.py nats <userId> <status> [orderId] [orderNumber] [otp]
    python producer.py http <userId> <status> [orderId] [orderNumber] [otp]

status: accepted | preparing | ready | collected | cancelled. orderId is the
order's MongoDB ObjectId (24 hex digits; a new one when omitted). Prints one
JSON line: {"via","userId","id","duplicate","notification"}: `id` is the
event id the user's streams carry as `id:`.

Environment: NATS_URL (comma-separated), NATS_USER + NATS_PASSWORD or
NATS_CREDS (a .creds file), NOTIFY_SUBJECT_PREFIX (default
campusbite.notify); NOTIFY_URL and NOTIFY_PUBLISHER_TOKEN (a JWT with scope
notifications:publish) for http; PUBLISH_DEADLINE_S: how long to keep
retrying (default 60).

Both paths are at-least-once and never duplicate: the same order transition
always carries the same Nats-Msg-Id / Idempotency-Key, so a retry after a
timeout stores nothing twice and answers with the same id.
"""

import asyncio
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.request

import nats
from nats.errors import Error as NatsError

STATUSES = {
    "accepted": ("Order Accepted ✅", "The kitchen has accepted order {n}."),
    "preparing": ("Order Being Prepared 👨‍🍳", "Order {n} is being prepared."),
    "ready": ("Order Ready for Pickup 🛍", "Order {n} is ready. Show OTP {otp} at the counter."),
    "collected": ("Order Collected 🎉", "Order {n} has been collected. Enjoy your meal!"),
    "cancelled": ("Order Cancelled", "Order {n} was cancelled."),
}

# Same rule as the gateway's: anything else could address another subject.
USER_ID = re.compile(r"^[^$.*>\s\x00-\x1f\x7f-\x9f][^.*>\s\x00-\x1f\x7f-\x9f]*$")


def order_notification(order_id, order_number, status, otp):
    """The notification a browser receives for an order's new status."""
    title, message = STATUSES[status]
    data = {"orderId": order_id, "orderNumber": order_number, "status": status}
    if status == "ready":
        data["otp"] = otp
    return {
        "type": "order_update",
        "title": title,
        "message": message.format(n=order_number, otp=otp),
        "data": data,
    }


def dedupe_key(order_id, status):
    """One key per order transition: retries of it are recognised as such."""
    return f"order-{order_id}-{status}"


def check_user_id(user_id):
    if not USER_ID.match(user_id) or len(user_id.encode()) > 256:
        raise ValueError(f"invalid user id {user_id!r}")


async def connect_nats(env=os.environ):
    """Connects with the settings of the environment (user/password or creds)."""
    options = {
        "servers": env.get("NATS_URL", "nats://127.0.0.1:4222").split(","),
        "name": "campusbite-python-producer",
        "max_reconnect_attempts": -1,
    }
    if env.get("NATS_CREDS"):
        options["user_credentials"] = env["NATS_CREDS"]
    elif env.get("NATS_USER"):
        options["user"] = env["NATS_USER"]
        options["password"] = env.get("NATS_PASSWORD", "")
    return await nats.connect(**options)


async def publish_nats(js, prefix, user_id, notification, msg_id, deadline):
    """JetStream publish with Nats-Msg-Id, retried until the stream acks it.

    Returns the event id (the stream sequence; for a duplicate, the original's).
    """
    check_user_id(user_id)
    subject = f"{prefix}.user.{user_id}"
    payload = json.dumps(notification, ensure_ascii=False).encode()
    attempt = 0
    while True:
        try:
            ack = await js.publish(subject, payload, timeout=5, headers={"Nats-Msg-Id": msg_id})
            return {"id": str(ack.seq), "duplicate": bool(ack.duplicate)}
        except (NatsError, asyncio.TimeoutError) as err:
            # Timeouts and "no responders" (stream leader being elected) are
            # worth retrying; the Nats-Msg-Id makes a retry a no-op.
            if time.monotonic() > deadline:
                raise
            print(f"publish to {subject} failed ({err!r}); retrying", file=sys.stderr)
            await asyncio.sleep(min(0.2 * 2**attempt, 5))
            attempt += 1


def publish_http(base_url, token, user_id, notification, key, deadline):
    """HTTP publish with Idempotency-Key, retried with the same key on 503,
    429, timeouts and network errors. Returns the event id."""
    check_user_id(user_id)
    body = json.dumps({"userId": user_id, "notification": notification}, ensure_ascii=False).encode()
    attempt = 0
    while True:
        wait = min(0.2 * 2**attempt, 5)
        request = urllib.request.Request(
            base_url.rstrip("/") + "/api/notifications/publish",
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": key,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.load(response)
                if response.status == 202:
                    return {"id": answer["id"], "duplicate": None}
                raise RuntimeError(f"HTTP {response.status}: {answer}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            if err.code not in (429, 503) or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP {err.code}: {detail}") from None
            retry_after = err.headers.get("Retry-After", "")
            if retry_after.isdigit():
                wait = int(retry_after)
            print(f"publish answered {err.code}; retrying with the same Idempotency-Key", file=sys.stderr)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            if time.monotonic() > deadline:
                raise
            print(f"publish failed ({err!r}); retrying with the same Idempotency-Key", file=sys.stderr)
        time.sleep(wait)
        attempt += 1


async def main(argv, env):
    if len(argv) < 3 or argv[0] not in ("nats", "http") or argv[2] not in STATUSES:
        print(
            "usage: producer.py <nats|http> <userId> <accepted|preparing|ready|collected|cancelled>"
            " [orderId] [orderNumber] [otp]",
            file=sys.stderr,
        )
        return 2
    via, user_id, status = argv[:3]
    order_id = argv[3] if len(argv) > 3 else secrets.token_hex(12)
    order_number = argv[4] if len(argv) > 4 else "CB20240115001"
    otp = argv[5] if len(argv) > 5 else "123456"
    if not re.fullmatch(r"[0-9a-f]{24}", order_id):
        print(f"orderId must be a 24-hex-digit ObjectId, got {order_id}", file=sys.stderr)
        return 2
    notification = order_notification(order_id, order_number, status, otp)
    key = dedupe_key(order_id, status)
    deadline = time.monotonic() + float(env.get("PUBLISH_DEADLINE_S", "60"))
    if via == "nats":
        nc = await connect_nats(env)
        try:
            prefix = env.get("NOTIFY_SUBJECT_PREFIX", "campusbite.notify")
            result = await publish_nats(nc.jetstream(), prefix, user_id, notification, key, deadline)
        finally:
            await nc.drain()
    else:
        token = env.get("NOTIFY_PUBLISHER_TOKEN")
        if not token:
            print("set NOTIFY_PUBLISHER_TOKEN to a publisher JWT", file=sys.stderr)
            return 2
        base = env.get("NOTIFY_URL", "http://127.0.0.1:8080")
        result = await asyncio.to_thread(publish_http, base, token, user_id, notification, key, deadline)
    print(json.dumps({"via": via, "userId": user_id, **result, "notification": notification}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv[1:], os.environ)))
    except Exception as err:  # one line, like the Node example
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)

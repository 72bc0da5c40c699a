/**
 * leader-tab.js — one notification stream shared by all tabs of an origin.
 *
 * Why: over HTTP/1.1 a browser allows only 6 connections per host, shared by
 * every tab. A student with 6 CampusBite tabs open, each holding its own
 * EventSource, leaves no connection for anything else (API calls hang). Over
 * HTTP/2 this matters much less, but the server still holds one stream per
 * tab.
 *
 * How: the tabs elect a leader with the Web Locks API. The tab holding the
 * lock 'campusbite-notify-leader' opens the only EventSource and rebroadcasts
 * every event as {id, data, type} on the BroadcastChannel 'campusbite-notify';
 * the other tabs (followers) just listen on the channel. Every tab remembers
 * the last event id it has seen. When the leader tab closes (or navigates
 * away), the browser releases its lock, the next waiting tab becomes leader
 * and opens a NEW EventSource with `lastEventId=<its last id>`, so the server
 * replays whatever was published during the hand-over: nothing is lost, and
 * ids a tab has already seen are dropped, so nothing is shown twice.
 *
 * Usage (an ES module, no dependencies):
 *
 *   import { subscribeShared } from './leader-tab.js';
 *
 *   const sub = subscribeShared(
 *     // a string, or a function returning the current URL (so that a renewed
 *     // token is used the next time a stream is opened)
 *     () => '/api/notifications/subscribe?token=' + encodeURIComponent(currentJwt),
 *     (msg) => {                       // msg = {id, data, type}
 *       if (msg.type === 'message') showNotification(JSON.parse(msg.data));
 *       if (msg.type === 'reset') refetchOrders();
 *       // every tab sees 'token-expiring'; let only the leader renew:
 *       if (msg.type === 'token-expiring' && sub.isLeader()) renewThen(() => sub.reconnect());
 *     });
 *   // sub.isLeader(), sub.lastEventId(), sub.reconnect(), sub.close()
 *
 * Options (third argument): withCredentials (cookie sessions, cross-origin),
 * eventTypes (default ['message', 'reset', 'token-expiring']), retryMs (how long
 * to wait before opening a new EventSource once the browser has given up,
 * default 3000), lockName / channelName (use per-user names if different users
 * can be signed in to tabs of the same origin).
 *
 * Without Web Locks or BroadcastChannel every tab simply opens its own
 * EventSource. Limitation: a tab that has not yet received any event resumes
 * from "now" if it becomes leader (the server's start position is not visible
 * to scripts).
 */

const DEFAULT_EVENT_TYPES = ['message', 'reset', 'token-expiring'];

/**
 * @param {string | (() => string)} url  subscribe URL (may carry ?token=)
 * @param {(msg: {id: string, data: string, type: string}) => void} onMessage
 * @param {{withCredentials?: boolean, eventTypes?: string[], retryMs?: number,
 *          lockName?: string, channelName?: string}} [options]
 */
export function subscribeShared(url, onMessage, options = {}) {
  const {
    withCredentials = false,
    eventTypes = DEFAULT_EVENT_TYPES,
    retryMs = 3000,
    lockName = 'campusbite-notify-leader',
    channelName = 'campusbite-notify',
  } = options;

  const shared = typeof BroadcastChannel === 'function' &&
    typeof navigator !== 'undefined' && !!navigator.locks;

  let lastId = null;      // last event id this tab has seen (stream or channel)
  let leader = false;
  let closed = false;
  let source = null;      // the EventSource, leader only
  let retryTimer = null;
  let releaseLock = null; // resolves the lock callback's promise
  const abort = typeof AbortController === 'function' ? new AbortController() : null;
  const channel = shared ? new BroadcastChannel(channelName) : null;

  const isDecimal = (s) => typeof s === 'string' && /^\d+$/.test(s);

  // Ids are decimal sequence numbers increasing per user: anything not newer
  // than what this tab has seen is a duplicate (e.g. replayed after a hand-over).
  function isNew(id) {
    if (!id || lastId === null) return true;
    if (isDecimal(id) && isDecimal(lastId)) {
      return id.length !== lastId.length ? id.length > lastId.length : id > lastId;
    }
    return id !== lastId;
  }

  // Returns false when the event is a duplicate notification.
  function accept(msg) {
    const fresh = isNew(msg.id);
    if (msg.type === 'message' && msg.id && !fresh) return false;
    if (msg.id && fresh) lastId = msg.id;
    return true;
  }

  function streamUrl() {
    const u = new URL(typeof url === 'function' ? url() : url, location.href);
    if (lastId) u.searchParams.set('lastEventId', lastId);
    else u.searchParams.delete('lastEventId');
    return u.toString();
  }

  function open() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (source) source.close();
    if (closed || !leader) return;
    const es = new EventSource(streamUrl(), { withCredentials });
    source = es;
    for (const type of eventTypes) {
      es.addEventListener(type, (e) => {
        if (es !== source) return;
        const msg = { id: e.lastEventId, data: e.data, type };
        if (!accept(msg)) return;
        if (channel) channel.postMessage(msg);
        onMessage(msg);
      });
    }
    es.addEventListener('error', () => {
      if (es !== source) return;
      // CONNECTING: the browser retries by itself with Last-Event-ID.
      // CLOSED: it gave up (401, 429, 503 …); open a new one after a pause.
      if (es.readyState === EventSource.CLOSED) {
        source = null;
        retryTimer = setTimeout(open, retryMs);
      }
    });
  }

  if (channel) {
    channel.addEventListener('message', (ev) => {
      const msg = ev.data;
      if (closed || !msg || typeof msg.type !== 'string') return;
      const clean = { id: String(msg.id || ''), data: msg.data, type: msg.type };
      if (accept(clean)) onMessage(clean);
    });
  }

  if (shared) {
    navigator.locks.request(lockName, abort ? { signal: abort.signal } : {}, () => {
      if (closed) return undefined;
      leader = true;
      open();
      // Hold the lock until close(), or until the tab goes away.
      return new Promise((resolve) => { releaseLock = resolve; });
    }).catch((err) => {
      if (!err || err.name !== 'AbortError') throw err;
    });
  } else {
    leader = true;
    open();
  }

  return {
    /** True while this tab holds the EventSource. */
    isLeader: () => leader,
    /** The last event id this tab has seen, or null. */
    lastEventId: () => lastId,
    /** Leader only: open a new EventSource now (e.g. after renewing the token). */
    reconnect() {
      if (leader && !closed) open();
    },
    /** Stop listening; a leader hands over to another tab. */
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(retryTimer);
      if (source) source.close();
      source = null;
      leader = false;
      if (abort) abort.abort();
      if (releaseLock) releaseLock();
      if (channel) channel.close();
    },
  };
}

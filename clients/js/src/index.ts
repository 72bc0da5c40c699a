/*! @campusbite/notify-client — generated from clients/js/src by `npm run build`; do not edit. MIT */

/**
 * @campusbite/notify-client: a browser client for campusbite-notify.
 *
 * It wraps `EventSource` (GET /api/notifications/subscribe, docs/protocol.md §1)
 * and adds what a plain EventSource page does not do by itself:
 *
 * - typed `order_update` notifications, a generic handler for other types;
 * - the last event id kept across every new EventSource (`lastEventId=`),
 *   and duplicates dropped, so nothing is lost or shown twice;
 * - a new EventSource after a hard refusal (the browser gives up on any
 *   answer but `200 text/event-stream`), with jittered exponential backoff
 *   and the server's `Retry-After`; soft refusals (`event: unavailable`)
 *   are left to the browser's own reconnect;
 * - token renewal through an async `getToken()` on `token-expiring` and,
 *   once, on a `401`;
 * - cookie sessions (`POST /api/notifications/session`, `withCredentials`);
 * - optional sharing: one leader tab (Web Locks) holds the only stream and
 *   forwards every event to the other tabs (BroadcastChannel);
 * - `onReset` when the server's history no longer reaches the last id.
 */

// ---- notifications ------------------------------------------------------------

/** The order states CampusBite's producers send. */
export type OrderStatus = 'accepted' | 'preparing' | 'ready' | 'collected' | 'cancelled';

/** An `order_update` notification, as producers publish it. */
export interface OrderUpdate {
  type: 'order_update';
  title: string;
  message: string;
  data: {
    orderId: string;
    orderNumber: string;
    /** One of {@link OrderStatus}; other strings are passed through. */
    status: OrderStatus | (string & {});
    /** The pickup code, with `status: 'ready'`. */
    otp?: string;
    [extra: string]: unknown;
  };
}

/** Any notification (the JSON object the producer sent). */
export interface GenericNotification {
  type: string;
  title?: string;
  message?: string;
  data?: unknown;
  [extra: string]: unknown;
}

/** What a notification handler receives besides the notification. */
export interface EventMeta {
  /** The event id (a decimal sequence number, increasing per user). */
  id: string;
  /** The event's `data` exactly as sent. */
  raw: string;
}

/** The data of a `reset` event, e.g. `{reason: 'history_truncated'}`. */
export interface ResetInfo {
  reason: string;
  [extra: string]: unknown;
}

/** True when `n` has the shape of an {@link OrderUpdate}. */
export function isOrderUpdate(n: unknown): n is OrderUpdate {
  if (!isObject(n) || n.type !== 'order_update') return false;
  const d = n.data;
  return isObject(d) && typeof d.orderId === 'string' && typeof d.orderNumber === 'string' &&
    typeof d.status === 'string' && (d.otp === undefined || typeof d.otp === 'string');
}

/** Parses a notification's data; null unless it is a JSON object with a string `type`. */
export function parseNotification(raw: string): GenericNotification | null {
  const v = parseJson(raw);
  return isObject(v) && typeof v.type === 'string' ? (v as GenericNotification) : null;
}

// ---- event ids ------------------------------------------------------------------

const DECIMAL = /^\d+$/;

/**
 * Orders two event ids: negative, zero or positive. Ids are decimal sequence
 * numbers that may exceed 2^53, so they are compared as digit strings; a
 * non-decimal id is only ever equal or newer.
 */
export function compareEventIds(a: string, b: string): number {
  if (a === b) return 0;
  if (DECIMAL.test(a) && DECIMAL.test(b)) {
    const x = a.replace(/^0+(?=\d)/, '');
    const y = b.replace(/^0+(?=\d)/, '');
    if (x.length !== y.length) return x.length - y.length;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return 1;
}

/**
 * The position of one tab: the newest event id it has seen. A notification
 * whose id is not newer is a duplicate (a replay after a new EventSource or
 * a leader hand-over) and is dropped.
 */
export class Cursor {
  /** The newest id seen, or null. */
  last: string | null;

  constructor(start: string | null = null) {
    this.last = start || null;
  }

  /** Records `id`; false when a `message` event with this id was already seen. */
  offer(type: string, id: string): boolean {
    if (!id) return true;
    const newer = this.last === null || compareEventIds(id, this.last) > 0;
    if (newer) this.last = id;
    return newer || type !== 'message';
  }
}

// ---- backoff --------------------------------------------------------------------

/** Delays between new EventSources after hard refusals. */
export interface BackoffOptions {
  /** The first delay, before jitter (default 1000 ms). */
  initialMs?: number;
  /** The largest delay, before jitter (default 30000 ms). */
  maxMs?: number;
  /** Growth per consecutive refusal (default 2). */
  factor?: number;
}

/**
 * The delay before attempt number `failures` (1, 2, …): exponential, capped,
 * with "equal jitter" (between half and all of it) so that many tabs refused
 * at once do not come back at once; never shorter than the server's
 * `Retry-After` (itself spread by up to half).
 */
export function backoffDelay(
  failures: number,
  options: BackoffOptions = {},
  retryAfterMs: number | null = null,
  random: () => number = Math.random,
): number {
  const { initialMs = 1000, maxMs = 30000, factor = 2 } = options;
  const step = Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, failures - 1)));
  let delay = step / 2 + random() * (step / 2);
  if (retryAfterMs !== null && retryAfterMs > 0) delay = Math.max(delay, retryAfterMs * (1 + random() / 2));
  return Math.round(delay);
}

/** `Retry-After` in milliseconds (seconds form only), or null. */
export function parseRetryAfter(value: string | null | undefined): number | null {
  if (!value || !/^\s*\d+\s*$/.test(value)) return null;
  return Number(value) * 1000;
}

/** `url` with the query parameter `name` set (or removed when `value` is null). */
export function withParam(url: string, name: string, value: string | null): string {
  const absolute = /^[a-z][a-z0-9+.-]*:/i.test(url);
  const here = typeof location !== 'undefined' ? location.href : undefined;
  const u = new URL(url, absolute ? undefined : here ?? 'http://relative.invalid');
  if (value === null) u.searchParams.delete(name);
  else u.searchParams.set(name, value);
  return absolute || here ? u.toString() : u.pathname + u.search + u.hash;
}

// ---- errors -----------------------------------------------------------------------

/**
 * What went wrong, for {@link NotifyClientOptions.onError}:
 * - `unauthorized`: 401 even after a renewal; the client stops (call
 *   reconnect() once the user has signed in again);
 * - `forbidden`: 403 (e.g. a cookie request from a foreign origin); the client stops;
 * - `refused`: a refusal a later attempt may cure (429, 503, network); the client retries;
 * - `renew_failed`: getToken() failed or returned no token;
 * - `session_failed`: POST /api/notifications/session failed;
 * - `bad_notification`: a notification that is not a JSON object with a `type`.
 */
export type NotifyErrorCode =
  | 'unauthorized'
  | 'forbidden'
  | 'refused'
  | 'renew_failed'
  | 'session_failed'
  | 'bad_notification';

/** An error reported to `onError`; `fatal` ones stop the client. */
export class NotifyClientError extends Error {
  readonly code: NotifyErrorCode;
  /** The HTTP status, when one is known. */
  readonly status: number | null;
  readonly fatal: boolean;

  constructor(code: NotifyErrorCode, message: string, status: number | null = null, fatal = false) {
    super(message);
    this.name = 'NotifyClientError';
    this.code = code;
    this.status = status;
    this.fatal = fatal;
  }
}

// ---- options ------------------------------------------------------------------------

/** The connection as a page shows it. */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting' | 'closed';

/** Why the state changed, for {@link NotifyClientOptions.onStateChange}. */
export interface StateChange {
  state: ConnectionState;
  /**
   * `open` (a stream is live), `network` (the browser is reconnecting by
   * itself), `unavailable` (a soft refusal: the browser retries after the
   * server's delay), `refused` (a hard refusal: a new EventSource follows in
   * `retryInMs`), `renewing`, `closed` (close()), `fatal` (see `error`).
   */
  reason: 'start' | 'open' | 'network' | 'unavailable' | 'refused' | 'renewing' | 'closed' | 'fatal';
  /** The refusal's code, e.g. `draining`, `too_many_connections`, `unauthorized`. */
  error?: string;
  /** When the next attempt is due, if known. */
  retryInMs?: number;
  /** True in the tab that holds the stream (always true without sharing). */
  leader: boolean;
}

/** Why `getToken` is called. */
export type TokenReason = 'initial' | 'expiring' | 'unauthorized';

/** Leader-tab sharing (Web Locks + BroadcastChannel). */
export interface ShareOptions {
  /**
   * Names the lock (`<name>-leader`) and the channel (`<name>`); tabs with
   * the same name share one stream. Use a per-user name when different
   * users can be signed in to tabs of one origin. Default `campusbite-notify`.
   */
  name?: string;
}

/** Options of {@link createNotifyClient}. */
export interface NotifyClientOptions {
  /**
   * Returns the user's access token (a JWT for this user, without the
   * publisher scope). Called before the first stream (`initial`), on
   * `token-expiring` (`expiring`) and after a 401 (`unauthorized`, once in a
   * row): return a fresh token for the last two.
   */
  getToken: (reason: TokenReason) => string | Promise<string>;
  /** The gateway's origin (e.g. `https://notify.campusbite.com`); default: this page's. */
  baseUrl?: string;
  /** `token` (default): `?token=` in the stream URL. `cookie`: an HttpOnly session cookie. */
  mode?: 'token' | 'cookie';
  /** Share one stream between the tabs of this origin (true or {@link ShareOptions}). */
  share?: boolean | ShareOptions;
  /** Resume from this id (e.g. kept in sessionStorage); default: from now. */
  lastEventId?: string | null;
  /** Each `order_update` notification, once, in order. */
  onOrderUpdate?: (n: OrderUpdate, meta: EventMeta) => void;
  /** Every other notification (and `order_update` when `onOrderUpdate` is not set). */
  onNotification?: (n: GenericNotification, meta: EventMeta) => void;
  /** The server's history no longer reaches the last id: refetch state. Replay follows. */
  onReset?: (info: ResetInfo) => void;
  onStateChange?: (change: StateChange) => void;
  /** `token-expiring` arrived (`expiresAt` in unix seconds); renewal follows. */
  onTokenExpiring?: (expiresAt: number | null) => void;
  /** A new token is in use (token mode: a new stream; cookie mode: a new cookie). */
  onTokenRenewed?: (reason: TokenReason) => void;
  onError?: (error: NotifyClientError) => void;
  backoff?: BackoffOptions;
  /** Default `/api/notifications/subscribe`. */
  subscribePath?: string;
  /** Default `/api/notifications/session`. */
  sessionPath?: string;
  /** An EventSource implementation (tests, polyfills); default the global one. */
  EventSource?: EventSourceLike;
  /** A fetch implementation; default the global one. */
  fetch?: typeof fetch;
}

/** The part of the EventSource constructor the client uses. */
export type EventSourceLike = new (url: string, init?: { withCredentials?: boolean }) => EventSourceInstance;

/** The part of an EventSource the client uses. */
export interface EventSourceInstance {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  close(): void;
}

// ---- credentials -----------------------------------------------------------------

/** Where the next stream goes and how it authenticates. */
interface Credentials {
  /** Whether renew() can obtain a new credential. */
  readonly renewable: boolean;
  /** The URL (without lastEventId) and credentials mode of a new EventSource. */
  prepare(): Promise<{ url: string; withCredentials: boolean }>;
  /** Obtains a new credential; true when the open stream must be replaced. */
  renew(reason: TokenReason): Promise<boolean>;
}

async function fetchToken(getToken: NotifyClientOptions['getToken'], reason: TokenReason): Promise<string> {
  let token: unknown;
  try {
    token = await getToken(reason);
  } catch (e) {
    throw new NotifyClientError('renew_failed', `getToken(${reason}) failed: ${describe(e)}`);
  }
  if (typeof token !== 'string' || !token) {
    throw new NotifyClientError('renew_failed', `getToken(${reason}) returned no token`);
  }
  return token;
}

/** `?token=<JWT>` in the stream URL; renewing needs a new EventSource. */
class TokenCredentials implements Credentials {
  readonly renewable = true;
  private token: string | null = null;

  constructor(private readonly getToken: NotifyClientOptions['getToken'], private readonly url: string) {}

  async prepare() {
    if (this.token === null) this.token = await fetchToken(this.getToken, 'initial');
    return { url: withParam(this.url, 'token', this.token), withCredentials: false };
  }

  async renew(reason: TokenReason) {
    this.token = await fetchToken(this.getToken, reason);
    return true;
  }
}

/**
 * The HttpOnly session cookie: POST the token, then a credentialed
 * EventSource. Renewing is another POST; the open stream keeps running and
 * the browser's own reconnect (when it ends at the old expiry) carries the
 * new cookie.
 */
class CookieCredentials implements Credentials {
  readonly renewable = true;
  private session = false;

  constructor(
    private readonly getToken: NotifyClientOptions['getToken'],
    private readonly url: string,
    private readonly sessionUrl: string,
    private readonly fetchFn: typeof fetch,
  ) {}

  async prepare() {
    if (!this.session) await this.post(await fetchToken(this.getToken, 'initial'));
    return { url: this.url, withCredentials: true };
  }

  async renew(reason: TokenReason) {
    await this.post(await fetchToken(this.getToken, reason));
    return reason === 'unauthorized';
  }

  private async post(token: string) {
    let res: Response;
    try {
      res = await this.fetchFn(this.sessionUrl, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
        credentials: 'include',
      });
    } catch (e) {
      throw new NotifyClientError('session_failed', `session request failed: ${describe(e)}`);
    }
    if (!res.ok) {
      throw new NotifyClientError('session_failed', `session request answered HTTP ${res.status}`, res.status);
    }
    this.session = true;
  }
}

/** A fixed URL (or a function returning it), for subscribeShared(). */
class UrlCredentials implements Credentials {
  readonly renewable = false;

  constructor(private readonly url: string | (() => string), private readonly withCredentials: boolean) {}

  async prepare() {
    return { url: typeof this.url === 'function' ? this.url() : this.url, withCredentials: this.withCredentials };
  }

  async renew(): Promise<boolean> {
    throw new NotifyClientError('renew_failed', 'no getToken() to renew with');
  }
}

// ---- one EventSource, reopened as needed ----------------------------------------------

const CLOSED = 2; // EventSource.CLOSED
const PROBE_TIMEOUT_MS = 10000;

interface StreamHooks {
  /** Every event of a listened type (before de-duplication). */
  event(type: string, id: string, data: string): void;
  state(change: Omit<StateChange, 'leader'>): void;
  error(error: NotifyClientError): void;
  expiring(expiresAt: number | null): void;
  renewed(reason: TokenReason): void;
}

interface StreamConfig {
  EventSource: EventSourceLike;
  fetch: typeof fetch | null;
  eventTypes: readonly string[];
  backoff: BackoffOptions;
}

/**
 * Owns the tab's EventSource. While it is open the browser reconnects by
 * itself (with Last-Event-ID); once the browser gives up (a hard refusal),
 * this opens a new one, resuming from the cursor.
 */
class Stream {
  private es: EventSourceInstance | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  /** Bumped by every open() and stop(): async work of an older one is dropped. */
  private gen = 0;
  /** Consecutive refusals, the backoff's exponent. */
  private failures = 0;
  /** A 401 already led to a renewal since the last open stream. */
  private renewedAfter401 = false;
  private renewing = false;
  private stopped = true;

  constructor(
    private readonly cfg: StreamConfig,
    private readonly creds: Credentials,
    private readonly cursor: Cursor,
    private readonly hooks: StreamHooks,
  ) {}

  start(): void {
    this.stopped = false;
    void this.open('connecting', 'start');
  }

  stop(): void {
    this.stopped = true;
    this.gen++;
    clearTimeout(this.timer);
    clearTimeout(this.renewTimer);
    this.renewing = false;
    this.closeSource();
  }

  /** A new EventSource now (e.g. after signing in again). */
  restart(): void {
    this.failures = 0;
    this.renewedAfter401 = false;
    this.stopped = false;
    void this.open('connecting', 'start');
  }

  private closeSource(): void {
    if (this.es) this.es.close();
    this.es = null;
  }

  /** Opens a new EventSource from the cursor; `state` null keeps the current state. */
  private async open(state: ConnectionState | null, reason: StateChange['reason']): Promise<void> {
    clearTimeout(this.timer);
    this.closeSource();
    const gen = ++this.gen;
    if (state) this.hooks.state({ state, reason });
    let target: { url: string; withCredentials: boolean };
    try {
      target = await this.creds.prepare();
    } catch (e) {
      if (gen === this.gen) await this.refused(gen, asError(e), null);
      return;
    }
    if (gen !== this.gen || this.stopped) return;
    const url = withParam(target.url, 'lastEventId', this.cursor.last);
    const es = new this.cfg.EventSource(url, { withCredentials: target.withCredentials });
    this.es = es;
    const current = () => es === this.es;
    es.addEventListener('open', () => {
      if (!current()) return;
      this.failures = 0;
      this.renewedAfter401 = false;
      this.hooks.state({ state: 'live', reason: 'open' });
    });
    es.addEventListener('error', () => {
      if (!current()) return;
      if (es.readyState === CLOSED) {
        // The browser gave up: 401, 403, 429 or 503 (or CORS). Find out which.
        this.es = null;
        es.close();
        this.hooks.state({ state: 'reconnecting', reason: 'refused' });
        void this.probe(target).then((probe) => {
          if (gen !== this.gen) return undefined;
          const status = probe ? probe.status : null;
          const err = new NotifyClientError(
            status === 401 ? 'unauthorized' : status === 403 ? 'forbidden' : 'refused',
            status === null ? 'the stream was refused' : `the stream was refused with HTTP ${status}`,
            status,
          );
          return this.refused(gen, err, probe ? probe.retryAfterMs : null);
        });
      } else {
        this.hooks.state({ state: 'reconnecting', reason: 'network' });
      }
    });
    for (const type of this.cfg.eventTypes) {
      es.addEventListener(type, (e) => {
        if (current()) this.hooks.event(type, e.lastEventId, typeof e.data === 'string' ? e.data : '');
      });
    }
    es.addEventListener('token-expiring', (e) => {
      if (!current()) return;
      this.cursor.offer('token-expiring', e.lastEventId); // may be the start frame's id
      const info = parseJson(e.data);
      const expiresAt = isObject(info) && typeof info.expiresAt === 'number' ? info.expiresAt : null;
      this.hooks.expiring(expiresAt);
      if (this.creds.renewable) void this.renewBeforeExpiry(gen, expiresAt);
    });
    es.addEventListener('unavailable', (e) => {
      if (!current()) return;
      // A soft refusal: the response ends and the browser retries by itself
      // after the server's `retry:`, keeping its Last-Event-ID (or the
      // position this refusal carried, for a page that never connected).
      this.cursor.offer('unavailable', e.lastEventId);
      const info = parseJson(e.data);
      const code = isObject(info) && typeof info.error === 'string' ? info.error : 'unavailable';
      const retry = isObject(info) && typeof info.retryAfter === 'number' ? info.retryAfter * 1000 : undefined;
      this.hooks.state({ state: 'reconnecting', reason: 'unavailable', error: code, retryInMs: retry });
    });
  }

  /**
   * Asks for the same URL as JSON (no `Accept: text/event-stream`) to learn
   * the status and Retry-After the EventSource does not show; a 2xx answer
   * (the refusal is over) is cut at once. Null when it cannot be read
   * (network, CORS).
   */
  private async probe(target: { url: string; withCredentials: boolean }) {
    if (!this.cfg.fetch) return null;
    const ctl = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = ctl ? setTimeout(() => ctl.abort(), PROBE_TIMEOUT_MS) : undefined;
    try {
      const res = await this.cfg.fetch(withParam(target.url, 'lastEventId', this.cursor.last), {
        headers: { Accept: 'application/json' },
        credentials: target.withCredentials ? 'include' : 'same-origin',
        cache: 'no-store',
        signal: ctl ? ctl.signal : undefined,
      });
      return { status: res.status, retryAfterMs: parseRetryAfter(res.headers.get('Retry-After')) };
    } catch (_) {
      return null;
    } finally {
      clearTimeout(timer);
      if (ctl) ctl.abort();
    }
  }

  /** After a refusal (or a failed prepare): renew once on 401, stop on 403, else back off. */
  private async refused(gen: number, err: NotifyClientError, retryAfterMs: number | null): Promise<void> {
    if (this.stopped) return;
    const status = err.status;
    if (status !== null && status >= 200 && status < 300) {
      // The refusal is already over (the probe got a stream): reopen soon.
      this.schedule(gen, err, null);
      return;
    }
    // Unknown status (CORS, network) may hide a 401: renew once as well.
    const maybe401 = status === 401 || (status === null && err.code !== 'renew_failed');
    if (maybe401 && this.creds.renewable && !this.renewedAfter401) {
      this.renewedAfter401 = true;
      this.hooks.state({ state: 'reconnecting', reason: 'renewing', error: err.code });
      try {
        await this.creds.renew('unauthorized');
      } catch (e) {
        if (gen !== this.gen) return;
        this.hooks.error(asError(e));
        this.schedule(gen, err, retryAfterMs);
        return;
      }
      if (gen !== this.gen || this.stopped) return;
      this.hooks.renewed('unauthorized');
      void this.open(null, 'renewing');
      return;
    }
    if (status === 401 || status === 403) {
      const fatal = new NotifyClientError(status === 401 ? 'unauthorized' : 'forbidden', err.message, status, true);
      this.stop();
      this.hooks.error(fatal);
      this.hooks.state({ state: 'closed', reason: 'fatal', error: fatal.code });
      return;
    }
    this.hooks.error(err);
    this.schedule(gen, err, retryAfterMs);
  }

  private schedule(gen: number, err: NotifyClientError, retryAfterMs: number | null): void {
    if (gen !== this.gen || this.stopped) return;
    this.failures++;
    const delay = backoffDelay(this.failures, this.cfg.backoff, retryAfterMs);
    this.hooks.state({ state: 'reconnecting', reason: 'refused', error: err.code, retryInMs: delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (gen === this.gen && !this.stopped) void this.open(null, 'refused');
    }, delay);
  }

  /** token-expiring: renew now, retrying with backoff until the token expires. */
  private async renewBeforeExpiry(gen: number, expiresAt: number | null, attempt = 1): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    let reopen: boolean;
    try {
      reopen = await this.creds.renew('expiring');
    } catch (e) {
      this.renewing = false;
      if (gen !== this.gen || this.stopped) return;
      this.hooks.error(asError(e));
      const delay = backoffDelay(attempt, this.cfg.backoff);
      if (expiresAt !== null && Date.now() + delay >= expiresAt * 1000) return; // the 401 path takes over
      clearTimeout(this.renewTimer);
      this.renewTimer = setTimeout(() => {
        if (gen === this.gen && !this.stopped) void this.renewBeforeExpiry(gen, expiresAt, attempt + 1);
      }, delay);
      return;
    }
    this.renewing = false;
    if (gen !== this.gen || this.stopped) return;
    this.hooks.renewed('expiring');
    // A native EventSource keeps its URL, so a new token needs a new one;
    // it resumes from the cursor (the server replays the gap).
    if (reopen) void this.open(null, 'renewing');
  }
}

// ---- leader-tab sharing ------------------------------------------------------------

/** Messages between the tabs (BroadcastChannel). */
type ChannelMessage =
  | { v: 1; k: 'event'; type: string; id: string; data: string }
  | { v: 1; k: 'state'; change: Omit<StateChange, 'leader'>; id: string | null }
  | { v: 1; k: 'hello' }
  | { v: 1; k: 'reconnect' };

/** True when Web Locks and BroadcastChannel are both available. */
export function canShare(): boolean {
  return typeof BroadcastChannel === 'function' && typeof navigator !== 'undefined' && !!navigator.locks;
}

/**
 * The leader election: every tab asks for the same Web Lock; the holder
 * leads until close() or until the tab goes away (the browser releases the
 * lock), then the next waiting tab takes over.
 */
class Share {
  private readonly channel: BroadcastChannel;
  private readonly abort = new AbortController();
  private release: (() => void) | null = null;
  private closed = false;
  leader = false;

  constructor(
    channelName: string,
    lockName: string,
    private readonly onLead: () => void,
    onMessage: (m: ChannelMessage) => void,
  ) {
    this.channel = new BroadcastChannel(channelName);
    this.channel.addEventListener('message', (ev: MessageEvent) => {
      const m = ev.data as ChannelMessage | null;
      if (!this.closed && isObject(m) && m.v === 1) onMessage(m);
    });
    navigator.locks.request(lockName, { signal: this.abort.signal }, () => {
      if (this.closed) return undefined;
      this.leader = true;
      this.onLead();
      return new Promise<void>((resolve) => { this.release = resolve; });
    }).catch((e: unknown) => {
      if (!(isObject(e) && e.name === 'AbortError')) throw e;
    });
    this.post({ v: 1, k: 'hello' });
  }

  post(m: ChannelMessage): void {
    if (!this.closed) this.channel.postMessage(m);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.leader = false;
    this.abort.abort();
    if (this.release) this.release();
    this.channel.close();
  }
}

// ---- the client ----------------------------------------------------------------------

interface CoreOptions {
  creds: Credentials;
  cursor: Cursor;
  eventTypes: readonly string[];
  /** Channel and lock names when sharing. */
  share: { channel: string; lock: string } | null;
  EventSource?: EventSourceLike;
  fetch?: typeof fetch;
  backoff?: BackoffOptions;
  /** Receives every event once (duplicates dropped), in this tab. */
  deliver(type: string, id: string, data: string): void;
  onStateChange?: (change: StateChange) => void;
  onTokenExpiring?: (expiresAt: number | null) => void;
  onTokenRenewed?: (reason: TokenReason) => void;
  onError?: (error: NotifyClientError) => void;
}

/** The stream, the cursor and the optional sharing, without the typed layer. */
class Core {
  private readonly stream: Stream;
  private readonly share: Share | null;
  private current: Omit<StateChange, 'leader'> = { state: 'connecting', reason: 'start' };
  private closed = false;

  constructor(private readonly o: CoreOptions) {
    const ES = o.EventSource ?? (typeof EventSource === 'function' ? (EventSource as unknown as EventSourceLike) : null);
    if (!ES) throw new Error('notify-client: no EventSource in this environment');
    const f = o.fetch ?? (typeof fetch === 'function' ? fetch.bind(globalThis) : null);
    this.stream = new Stream(
      { EventSource: ES, fetch: f, eventTypes: o.eventTypes, backoff: o.backoff ?? {} },
      o.creds,
      o.cursor,
      {
        event: (type, id, data) => {
          if (!this.o.cursor.offer(type, id)) return;
          this.share?.post({ v: 1, k: 'event', type, id, data });
          this.o.deliver(type, id, data);
        },
        state: (change) => {
          this.setState(change);
          this.share?.post({ v: 1, k: 'state', change, id: this.o.cursor.last });
        },
        error: (e) => call(this.o.onError, e),
        expiring: (at) => call(this.o.onTokenExpiring, at),
        renewed: (reason) => call(this.o.onTokenRenewed, reason),
      },
    );
    this.share = o.share && canShare()
      ? new Share(o.share.channel, o.share.lock, () => this.stream.start(), (m) => this.fromChannel(m))
      : null;
    this.setState(this.current);
    if (!this.share) this.stream.start();
  }

  get state(): ConnectionState {
    return this.current.state;
  }

  get isLeader(): boolean {
    return !this.closed && (this.share ? this.share.leader : true);
  }

  reconnect(): void {
    if (this.closed) return;
    if (this.isLeader) this.stream.restart();
    else this.share?.post({ v: 1, k: 'reconnect' });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.stop();
    this.share?.close(); // a leader hands over to the next tab
    this.setState({ state: 'closed', reason: 'closed' });
  }

  private setState(change: Omit<StateChange, 'leader'>): void {
    this.current = change;
    call(this.o.onStateChange, { ...change, leader: this.isLeader });
  }

  private fromChannel(m: ChannelMessage): void {
    if (this.closed) return;
    if (m.k === 'hello') {
      if (this.isLeader) this.share?.post({ v: 1, k: 'state', change: this.current, id: this.o.cursor.last });
      return;
    }
    if (m.k === 'reconnect') {
      if (this.isLeader) this.stream.restart();
      return;
    }
    if (this.isLeader) return; // another tab's late message; this tab has its own stream
    if (m.k === 'event') {
      if (typeof m.type !== 'string' || typeof m.data !== 'string') return;
      const id = typeof m.id === 'string' ? m.id : '';
      if (this.o.cursor.offer(m.type, id)) this.o.deliver(m.type, id, m.data);
    } else if (m.k === 'state' && isObject(m.change)) {
      // The leader's position: a tab that takes over resumes from there.
      if (typeof m.id === 'string') this.o.cursor.offer('position', m.id);
      this.setState(m.change);
    }
  }
}

/** A running client; see {@link createNotifyClient}. */
export interface NotifyClient {
  /** The connection as the page should show it (followers mirror their leader). */
  readonly state: ConnectionState;
  /** The newest event id this tab has seen, or null. */
  readonly lastEventId: string | null;
  /** True in the tab that holds the stream (always true without sharing). */
  readonly isLeader: boolean;
  /** Opens a new stream now, e.g. after a fatal 401 once the user signed in again (a follower asks its leader). */
  reconnect(): void;
  /** Stops; a leader hands the stream over to another tab. */
  close(): void;
}

const SUBSCRIBE_PATH = '/api/notifications/subscribe';
const SESSION_PATH = '/api/notifications/session';

/**
 * Starts receiving this user's notifications.
 *
 * ```js
 * const client = createNotifyClient({
 *   getToken: () => auth.accessToken(),          // async is fine
 *   onOrderUpdate: (n) => showOrder(n.data.orderNumber, n.data.status, n.data.otp),
 *   onReset: () => refetchOrders(),
 *   share: true,                                 // one stream for all tabs
 * });
 * ```
 */
export function createNotifyClient(options: NotifyClientOptions): NotifyClient {
  if (!options || typeof options.getToken !== 'function') {
    throw new TypeError('createNotifyClient: getToken is required');
  }
  const base = (options.baseUrl ?? '').replace(/\/+$/, '');
  const subscribeUrl = base + (options.subscribePath ?? SUBSCRIBE_PATH);
  const f = options.fetch ?? (typeof fetch === 'function' ? fetch.bind(globalThis) : null);
  let creds: Credentials;
  if (options.mode === 'cookie') {
    if (!f) throw new Error('notify-client: cookie mode needs fetch');
    creds = new CookieCredentials(options.getToken, subscribeUrl, base + (options.sessionPath ?? SESSION_PATH), f);
  } else {
    creds = new TokenCredentials(options.getToken, subscribeUrl);
  }
  const cursor = new Cursor(options.lastEventId ?? null);
  const shareName = options.share ? (typeof options.share === 'object' && options.share.name) || DEFAULT_SHARE_NAME : null;

  const deliver = (type: string, id: string, data: string) => {
    if (type === 'message') {
      const n = parseNotification(data);
      if (!n) {
        call(options.onError, new NotifyClientError('bad_notification', `notification ${id} is not a JSON object with a type`));
      } else if (options.onOrderUpdate && isOrderUpdate(n)) {
        call(options.onOrderUpdate, n, { id, raw: data });
      } else {
        call(options.onNotification, n, { id, raw: data });
      }
    } else if (type === 'reset') {
      const info = parseJson(data);
      call(options.onReset, (isObject(info) && typeof info.reason === 'string' ? info : { reason: 'unknown' }) as ResetInfo);
    }
  };

  const core = new Core({
    creds,
    cursor,
    eventTypes: ['message', 'reset'],
    share: shareName ? { channel: shareName, lock: `${shareName}-leader` } : null,
    EventSource: options.EventSource,
    fetch: f ?? undefined,
    backoff: options.backoff,
    deliver,
    onStateChange: options.onStateChange,
    onTokenExpiring: options.onTokenExpiring,
    onTokenRenewed: options.onTokenRenewed,
    onError: options.onError,
  });
  return {
    get state() { return core.state; },
    get lastEventId() { return cursor.last; },
    get isLeader() { return core.isLeader; },
    reconnect: () => core.reconnect(),
    close: () => core.close(),
  };
}

// ---- the earlier leader-tab API (served as /leader-tab.js) -------------------------------

const DEFAULT_SHARE_NAME = 'campusbite-notify';

/** An event as {@link subscribeShared} delivers it. */
export interface SharedMessage {
  id: string;
  data: string;
  type: string;
}

/** Options of {@link subscribeShared}. */
export interface SubscribeSharedOptions {
  withCredentials?: boolean;
  /** Default `['message', 'reset', 'token-expiring']`. */
  eventTypes?: string[];
  /** The first delay before a new EventSource after a hard refusal (default 3000 ms). */
  retryMs?: number;
  /** Default `campusbite-notify-leader`. */
  lockName?: string;
  /** Default `campusbite-notify`. */
  channelName?: string;
}

/**
 * The raw leader-tab API of `/leader-tab.js`, kept for pages written for it:
 * one tab holds the EventSource for `url` (a string, or a function giving the
 * current one), every tab gets every event as {id, data, type}. Renewal is
 * the page's: on `token-expiring` the leader renews and calls reconnect().
 * New pages use {@link createNotifyClient} with `share: true`.
 */
export function subscribeShared(
  url: string | (() => string),
  onMessage: (msg: SharedMessage) => void,
  options: SubscribeSharedOptions = {},
) {
  const cursor = new Cursor();
  const core = new Core({
    creds: new UrlCredentials(url, !!options.withCredentials),
    cursor,
    eventTypes: options.eventTypes ?? ['message', 'reset', 'token-expiring'],
    share: {
      channel: options.channelName ?? DEFAULT_SHARE_NAME,
      lock: options.lockName ?? `${DEFAULT_SHARE_NAME}-leader`,
    },
    backoff: { initialMs: options.retryMs ?? 3000 },
    deliver: (type, id, data) => call(onMessage, { id, data, type }),
  });
  return {
    /** True while this tab holds the EventSource. */
    isLeader: () => core.isLeader,
    /** The last event id this tab has seen, or null. */
    lastEventId: () => cursor.last,
    /** Leader only: open a new EventSource now (e.g. after renewing the token). */
    reconnect: () => core.reconnect(),
    /** Stop listening; a leader hands over to another tab. */
    close: () => core.close(),
  };
}

// ---- small helpers ----------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

function parseJson(text: unknown): unknown {
  if (typeof text !== 'string') return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    return null;
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function asError(e: unknown): NotifyClientError {
  return e instanceof NotifyClientError ? e : new NotifyClientError('refused', describe(e));
}

/** Calls a page's handler; an exception in it is reported, not allowed to break the stream. */
function call<A extends unknown[]>(fn: ((...args: A) => void) | undefined, ...args: A): void {
  if (!fn) return;
  try {
    fn(...args);
  } catch (e) {
    setTimeout(() => { throw e; });
  }
}

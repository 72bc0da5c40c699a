/*! @campusbite/notify-client — generated from clients/js/src by `npm run build`; do not edit. MIT */
export function isOrderUpdate(n) {
    if (!isObject(n) || n.type !== 'order_update')
        return false;
    const d = n.data;
    return isObject(d) && typeof d.orderId === 'string' && typeof d.orderNumber === 'string' &&
        typeof d.status === 'string' && (d.otp === undefined || typeof d.otp === 'string');
}
export function parseNotification(raw) {
    const v = parseJson(raw);
    return isObject(v) && typeof v.type === 'string' ? v : null;
}
const DECIMAL = /^\d+$/;
export function compareEventIds(a, b) {
    if (a === b)
        return 0;
    if (DECIMAL.test(a) && DECIMAL.test(b)) {
        const x = a.replace(/^0+(?=\d)/, '');
        const y = b.replace(/^0+(?=\d)/, '');
        if (x.length !== y.length)
            return x.length - y.length;
        return x < y ? -1 : x > y ? 1 : 0;
    }
    return 1;
}
export class Cursor {
    constructor(start = null) {
        this.last = start || null;
    }
    offer(type, id) {
        if (!id)
            return true;
        const newer = this.last === null || compareEventIds(id, this.last) > 0;
        if (newer)
            this.last = id;
        return newer || type !== 'message';
    }
}
export function backoffDelay(failures, options = {}, retryAfterMs = null, random = Math.random) {
    const { initialMs = 1000, maxMs = 30000, factor = 2 } = options;
    const step = Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, failures - 1)));
    let delay = step / 2 + random() * (step / 2);
    if (retryAfterMs !== null && retryAfterMs > 0)
        delay = Math.max(delay, retryAfterMs * (1 + random() / 2));
    return Math.round(delay);
}
export function parseRetryAfter(value) {
    if (!value || !/^\s*\d+\s*$/.test(value))
        return null;
    return Number(value) * 1000;
}
export function withParam(url, name, value) {
    const absolute = /^[a-z][a-z0-9+.-]*:/i.test(url);
    const here = typeof location !== 'undefined' ? location.href : undefined;
    const u = new URL(url, absolute ? undefined : here ?? 'http://relative.invalid');
    if (value === null)
        u.searchParams.delete(name);
    else
        u.searchParams.set(name, value);
    return absolute || here ? u.toString() : u.pathname + u.search + u.hash;
}
export class NotifyClientError extends Error {
    constructor(code, message, status = null, fatal = false) {
        super(message);
        this.name = 'NotifyClientError';
        this.code = code;
        this.status = status;
        this.fatal = fatal;
    }
}
async function fetchToken(getToken, reason) {
    let token;
    try {
        token = await getToken(reason);
    }
    catch (e) {
        throw new NotifyClientError('renew_failed', `getToken(${reason}) failed: ${describe(e)}`);
    }
    if (typeof token !== 'string' || !token) {
        throw new NotifyClientError('renew_failed', `getToken(${reason}) returned no token`);
    }
    return token;
}
class TokenCredentials {
    constructor(getToken, url) {
        this.getToken = getToken;
        this.url = url;
        this.renewable = true;
        this.token = null;
    }
    async prepare() {
        if (this.token === null)
            this.token = await fetchToken(this.getToken, 'initial');
        return { url: withParam(this.url, 'token', this.token), withCredentials: false };
    }
    async renew(reason) {
        this.token = await fetchToken(this.getToken, reason);
        return true;
    }
}
class CookieCredentials {
    constructor(getToken, url, sessionUrl, fetchFn) {
        this.getToken = getToken;
        this.url = url;
        this.sessionUrl = sessionUrl;
        this.fetchFn = fetchFn;
        this.renewable = true;
        this.session = false;
    }
    async prepare() {
        if (!this.session)
            await this.post(await fetchToken(this.getToken, 'initial'));
        return { url: this.url, withCredentials: true };
    }
    async renew(reason) {
        await this.post(await fetchToken(this.getToken, reason));
        return reason === 'unauthorized';
    }
    async post(token) {
        let res;
        try {
            res = await this.fetchFn(this.sessionUrl, {
                method: 'POST',
                headers: { Authorization: `Bearer ${token}` },
                credentials: 'include',
            });
        }
        catch (e) {
            throw new NotifyClientError('session_failed', `session request failed: ${describe(e)}`);
        }
        if (!res.ok) {
            throw new NotifyClientError('session_failed', `session request answered HTTP ${res.status}`, res.status);
        }
        this.session = true;
    }
}
class UrlCredentials {
    constructor(url, withCredentials) {
        this.url = url;
        this.withCredentials = withCredentials;
        this.renewable = false;
    }
    async prepare() {
        return { url: typeof this.url === 'function' ? this.url() : this.url, withCredentials: this.withCredentials };
    }
    async renew() {
        throw new NotifyClientError('renew_failed', 'no getToken() to renew with');
    }
}
const CLOSED = 2;
const PROBE_TIMEOUT_MS = 10000;
class Stream {
    constructor(cfg, creds, cursor, hooks) {
        this.cfg = cfg;
        this.creds = creds;
        this.cursor = cursor;
        this.hooks = hooks;
        this.es = null;
        this.gen = 0;
        this.failures = 0;
        this.renewedAfter401 = false;
        this.renewing = false;
        this.stopped = true;
    }
    start() {
        this.stopped = false;
        void this.open('connecting', 'start');
    }
    stop() {
        this.stopped = true;
        this.gen++;
        clearTimeout(this.timer);
        clearTimeout(this.renewTimer);
        this.renewing = false;
        this.closeSource();
    }
    restart() {
        this.failures = 0;
        this.renewedAfter401 = false;
        this.stopped = false;
        void this.open('connecting', 'start');
    }
    closeSource() {
        if (this.es)
            this.es.close();
        this.es = null;
    }
    async open(state, reason) {
        clearTimeout(this.timer);
        this.closeSource();
        const gen = ++this.gen;
        if (state)
            this.hooks.state({ state, reason });
        let target;
        try {
            target = await this.creds.prepare();
        }
        catch (e) {
            if (gen === this.gen)
                await this.refused(gen, asError(e), null);
            return;
        }
        if (gen !== this.gen || this.stopped)
            return;
        const url = withParam(target.url, 'lastEventId', this.cursor.last);
        const es = new this.cfg.EventSource(url, { withCredentials: target.withCredentials });
        this.es = es;
        const current = () => es === this.es;
        es.addEventListener('open', () => {
            if (!current())
                return;
            this.failures = 0;
            this.renewedAfter401 = false;
            this.hooks.state({ state: 'live', reason: 'open' });
        });
        es.addEventListener('error', () => {
            if (!current())
                return;
            if (es.readyState === CLOSED) {
                this.es = null;
                es.close();
                this.hooks.state({ state: 'reconnecting', reason: 'refused' });
                void this.probe(target).then((probe) => {
                    if (gen !== this.gen)
                        return undefined;
                    const status = probe ? probe.status : null;
                    const err = new NotifyClientError(status === 401 ? 'unauthorized' : status === 403 ? 'forbidden' : 'refused', status === null ? 'the stream was refused' : `the stream was refused with HTTP ${status}`, status);
                    return this.refused(gen, err, probe ? probe.retryAfterMs : null);
                });
            }
            else {
                this.hooks.state({ state: 'reconnecting', reason: 'network' });
            }
        });
        for (const type of this.cfg.eventTypes) {
            es.addEventListener(type, (e) => {
                if (current())
                    this.hooks.event(type, e.lastEventId, typeof e.data === 'string' ? e.data : '');
            });
        }
        es.addEventListener('token-expiring', (e) => {
            if (!current())
                return;
            this.cursor.offer('token-expiring', e.lastEventId);
            const info = parseJson(e.data);
            const expiresAt = isObject(info) && typeof info.expiresAt === 'number' ? info.expiresAt : null;
            this.hooks.expiring(expiresAt);
            if (this.creds.renewable)
                void this.renewBeforeExpiry(gen, expiresAt);
        });
        es.addEventListener('unavailable', (e) => {
            if (!current())
                return;
            this.cursor.offer('unavailable', e.lastEventId);
            const info = parseJson(e.data);
            const code = isObject(info) && typeof info.error === 'string' ? info.error : 'unavailable';
            const retry = isObject(info) && typeof info.retryAfter === 'number' ? info.retryAfter * 1000 : undefined;
            this.hooks.state({ state: 'reconnecting', reason: 'unavailable', error: code, retryInMs: retry });
        });
    }
    async probe(target) {
        if (!this.cfg.fetch)
            return null;
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
        }
        catch (_) {
            return null;
        }
        finally {
            clearTimeout(timer);
            if (ctl)
                ctl.abort();
        }
    }
    async refused(gen, err, retryAfterMs) {
        if (this.stopped)
            return;
        const status = err.status;
        if (status !== null && status >= 200 && status < 300) {
            this.schedule(gen, err, null);
            return;
        }
        const maybe401 = status === 401 || (status === null && err.code !== 'renew_failed');
        if (maybe401 && this.creds.renewable && !this.renewedAfter401) {
            this.renewedAfter401 = true;
            this.hooks.state({ state: 'reconnecting', reason: 'renewing', error: err.code });
            try {
                await this.creds.renew('unauthorized');
            }
            catch (e) {
                if (gen !== this.gen)
                    return;
                this.hooks.error(asError(e));
                this.schedule(gen, err, retryAfterMs);
                return;
            }
            if (gen !== this.gen || this.stopped)
                return;
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
    schedule(gen, err, retryAfterMs) {
        if (gen !== this.gen || this.stopped)
            return;
        this.failures++;
        const delay = backoffDelay(this.failures, this.cfg.backoff, retryAfterMs);
        this.hooks.state({ state: 'reconnecting', reason: 'refused', error: err.code, retryInMs: delay });
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
            if (gen === this.gen && !this.stopped)
                void this.open(null, 'refused');
        }, delay);
    }
    async renewBeforeExpiry(gen, expiresAt, attempt = 1) {
        if (this.renewing)
            return;
        this.renewing = true;
        let reopen;
        try {
            reopen = await this.creds.renew('expiring');
        }
        catch (e) {
            this.renewing = false;
            if (gen !== this.gen || this.stopped)
                return;
            this.hooks.error(asError(e));
            const delay = backoffDelay(attempt, this.cfg.backoff);
            if (expiresAt !== null && Date.now() + delay >= expiresAt * 1000)
                return;
            clearTimeout(this.renewTimer);
            this.renewTimer = setTimeout(() => {
                if (gen === this.gen && !this.stopped)
                    void this.renewBeforeExpiry(gen, expiresAt, attempt + 1);
            }, delay);
            return;
        }
        this.renewing = false;
        if (gen !== this.gen || this.stopped)
            return;
        this.hooks.renewed('expiring');
        if (reopen)
            void this.open(null, 'renewing');
    }
}
export function canShare() {
    return typeof BroadcastChannel === 'function' && typeof navigator !== 'undefined' && !!navigator.locks;
}
class Share {
    constructor(channelName, lockName, onLead, onMessage) {
        this.onLead = onLead;
        this.abort = new AbortController();
        this.release = null;
        this.closed = false;
        this.leader = false;
        this.channel = new BroadcastChannel(channelName);
        this.channel.addEventListener('message', (ev) => {
            const m = ev.data;
            if (!this.closed && isObject(m) && m.v === 1)
                onMessage(m);
        });
        navigator.locks.request(lockName, { signal: this.abort.signal }, () => {
            if (this.closed)
                return undefined;
            this.leader = true;
            this.onLead();
            return new Promise((resolve) => { this.release = resolve; });
        }).catch((e) => {
            if (!(isObject(e) && e.name === 'AbortError'))
                throw e;
        });
        this.post({ v: 1, k: 'hello' });
    }
    post(m) {
        if (!this.closed)
            this.channel.postMessage(m);
    }
    close() {
        if (this.closed)
            return;
        this.closed = true;
        this.leader = false;
        this.abort.abort();
        if (this.release)
            this.release();
        this.channel.close();
    }
}
class Core {
    constructor(o) {
        this.o = o;
        this.current = { state: 'connecting', reason: 'start' };
        this.closed = false;
        const ES = o.EventSource ?? (typeof EventSource === 'function' ? EventSource : null);
        if (!ES)
            throw new Error('notify-client: no EventSource in this environment');
        const f = o.fetch ?? (typeof fetch === 'function' ? fetch.bind(globalThis) : null);
        this.stream = new Stream({ EventSource: ES, fetch: f, eventTypes: o.eventTypes, backoff: o.backoff ?? {} }, o.creds, o.cursor, {
            event: (type, id, data) => {
                if (!this.o.cursor.offer(type, id))
                    return;
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
        });
        this.share = o.share && canShare()
            ? new Share(o.share.channel, o.share.lock, () => this.stream.start(), (m) => this.fromChannel(m))
            : null;
        this.setState(this.current);
        if (!this.share)
            this.stream.start();
    }
    get state() {
        return this.current.state;
    }
    get isLeader() {
        return !this.closed && (this.share ? this.share.leader : true);
    }
    reconnect() {
        if (this.closed)
            return;
        if (this.isLeader)
            this.stream.restart();
        else
            this.share?.post({ v: 1, k: 'reconnect' });
    }
    close() {
        if (this.closed)
            return;
        this.closed = true;
        this.stream.stop();
        this.share?.close();
        this.setState({ state: 'closed', reason: 'closed' });
    }
    setState(change) {
        this.current = change;
        call(this.o.onStateChange, { ...change, leader: this.isLeader });
    }
    fromChannel(m) {
        if (this.closed)
            return;
        if (m.k === 'hello') {
            if (this.isLeader)
                this.share?.post({ v: 1, k: 'state', change: this.current, id: this.o.cursor.last });
            return;
        }
        if (m.k === 'reconnect') {
            if (this.isLeader)
                this.stream.restart();
            return;
        }
        if (this.isLeader)
            return;
        if (m.k === 'event') {
            if (typeof m.type !== 'string' || typeof m.data !== 'string')
                return;
            const id = typeof m.id === 'string' ? m.id : '';
            if (this.o.cursor.offer(m.type, id))
                this.o.deliver(m.type, id, m.data);
        }
        else if (m.k === 'state' && isObject(m.change)) {
            if (typeof m.id === 'string')
                this.o.cursor.offer('position', m.id);
            this.setState(m.change);
        }
    }
}
const SUBSCRIBE_PATH = '/api/notifications/subscribe';
const SESSION_PATH = '/api/notifications/session';
export function createNotifyClient(options) {
    if (!options || typeof options.getToken !== 'function') {
        throw new TypeError('createNotifyClient: getToken is required');
    }
    const base = (options.baseUrl ?? '').replace(/\/+$/, '');
    const subscribeUrl = base + (options.subscribePath ?? SUBSCRIBE_PATH);
    const f = options.fetch ?? (typeof fetch === 'function' ? fetch.bind(globalThis) : null);
    let creds;
    if (options.mode === 'cookie') {
        if (!f)
            throw new Error('notify-client: cookie mode needs fetch');
        creds = new CookieCredentials(options.getToken, subscribeUrl, base + (options.sessionPath ?? SESSION_PATH), f);
    }
    else {
        creds = new TokenCredentials(options.getToken, subscribeUrl);
    }
    const cursor = new Cursor(options.lastEventId ?? null);
    const shareName = options.share ? (typeof options.share === 'object' && options.share.name) || DEFAULT_SHARE_NAME : null;
    const deliver = (type, id, data) => {
        if (type === 'message') {
            const n = parseNotification(data);
            if (!n) {
                call(options.onError, new NotifyClientError('bad_notification', `notification ${id} is not a JSON object with a type`));
            }
            else if (options.onOrderUpdate && isOrderUpdate(n)) {
                call(options.onOrderUpdate, n, { id, raw: data });
            }
            else {
                call(options.onNotification, n, { id, raw: data });
            }
        }
        else if (type === 'reset') {
            const info = parseJson(data);
            call(options.onReset, (isObject(info) && typeof info.reason === 'string' ? info : { reason: 'unknown' }));
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
const DEFAULT_SHARE_NAME = 'campusbite-notify';
export function subscribeShared(url, onMessage, options = {}) {
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
        isLeader: () => core.isLeader,
        lastEventId: () => cursor.last,
        reconnect: () => core.reconnect(),
        close: () => core.close(),
    };
}
function isObject(v) {
    return typeof v === 'object' && v !== null;
}
function parseJson(text) {
    if (typeof text !== 'string')
        return null;
    try {
        return JSON.parse(text);
    }
    catch (_) {
        return null;
    }
}
function describe(e) {
    return e instanceof Error ? e.message : String(e);
}
function asError(e) {
    return e instanceof NotifyClientError ? e : new NotifyClientError('refused', describe(e));
}
function call(fn, ...args) {
    if (!fn)
        return;
    try {
        fn(...args);
    }
    catch (e) {
        setTimeout(() => { throw e; });
    }
}

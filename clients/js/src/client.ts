import { DpopKey, NonceBook, asksForNonce, refusedForClock } from './dpop.js';
import { SessiondError, errorFrom, networkError } from './errors.js';
import { REFRESH_AHEAD_MAX_MS, backoff, refreshDelay, singleFlight } from './schedule.js';
import { SseParser } from './sse.js';
import { MemoryStore, defaultStore, type StoredSession, type TokenStore } from './store.js';
import type { ServerEvent, TokenPair } from './types.js';

/** `cookie`: the refresh token stays in sessiond's HttpOnly cookie. `token`: the client keeps it, encrypted. */
export type Mode = 'cookie' | 'token';

export interface ClientOptions {
  /** sessiond's address. Default: the page's origin (required outside browsers). */
  baseUrl?: string | URL;
  /** Default: `cookie` where there is a `document`, `token` elsewhere. */
  mode?: Mode;
  /** Default: encrypted IndexedDB where available, else memory. */
  store?: TokenStore;
  /** An access token from elsewhere (a pasted one, an app's own logic): the client then never refreshes. */
  tokenProvider?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Follow `GET /v1/events` while signed in (default true). */
  events?: boolean;
  /** The longest lead a refresh takes on expiry (default 5 minutes; a third of the lifetime when shorter). */
  refreshAheadMs?: number;
  /** How long a tab waits for another tab's refresh before taking over (default 10 s). */
  lockTimeoutMs?: number;
  /** Namespace of the locks, channel and database, for several clients on one origin (default `sessiond`). */
  name?: string;
  /**
   * Bind the session to a key of this browser (DPoP, RFC 9449): `true` for a non-extractable
   * P-256 key kept in IndexedDB (memory where there is none), or a [`DpopKey`] of your own.
   * Every refresh then carries a proof (binding the session at its first one), and requests
   * with a bound access token go as `Authorization: DPoP` with a proof. Default false.
   */
  dpop?: boolean | DpopKey;
  fetch?: typeof fetch;
}

/** The current access token and what the client knows of it. */
export interface Tokens {
  accessToken: string;
  expiresAt: number;
  sessionId: string;
}

export interface SignedOut {
  /** `revoked`, `expired`, `reuse_detected`, `anomaly`, `unknown` (refresh refused), `session_ended`, `signed_out` (by this user here), `unauthenticated`. */
  reason: string;
  event?: ServerEvent;
}

export interface ClientMetrics {
  /** Refreshes this tab made that succeeded. */
  refreshes: number;
  /** Refreshes this tab made that failed. */
  refreshFailures: number;
  averageRefreshMs: number;
  /** Refreshes this tab needed and got from another tab's request. */
  sharedRefreshes: number;
  /** Access tokens answered from memory. */
  cacheHits: number;
  /** Failed answers by the server's error code (`network_error` when there was none). */
  errors: Record<string, number>;
}

interface ClientEvents {
  refreshed: Tokens;
  signedOut: SignedOut;
  event: ServerEvent;
  stream: { connected: boolean };
}

type Message =
  | { t: 'pair'; p: StoredSession }
  | { t: 'out'; r: string }
  | { t: 'ev'; e: ServerEvent; id?: string };

/** An access token closer to expiry than this is not handed out. */
const MIN_VALID_MS = 5_000;
const RECONNECT_MIN_MS = 1_000;
const RECONNECT_MAX_MS = 30_000;

/** The claims of a JWT access token, read without checking it (the server does). */
const claimsOf = (accessToken: string): { sid?: unknown; iat?: unknown; cnf?: { jkt?: unknown } } => {
  try {
    return JSON.parse(atob(accessToken.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/'))) ?? {};
  } catch {
    return {};
  }
};

const sessionIdOf = (accessToken: string): string => String(claimsOf(accessToken).sid ?? '');

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });

/**
 * sessiond's client: keeps the user signed in, refreshing once for every tab of the origin,
 * attaches the access token to requests, and follows the event stream so that a session revoked
 * anywhere signs out here.
 */
export class SessiondClient {
  readonly mode: Mode;
  private readonly base: URL;
  private readonly store: TokenStore;
  private readonly http: typeof fetch;
  private readonly name: string;
  private readonly ahead: number;
  private readonly lockTimeout: number;
  private readonly dpop: DpopKey | null;
  private readonly nonces = new NonceBook();
  /**
   * How far the server's clock is ahead of this machine's, from the `iat` of the last token it
   * issued: proofs are dated by the server's clock, so that a device whose clock is off still
   * makes proofs the server finds fresh.
   */
  private skew = 0;
  /** The skew the `iat` of the pair handed to `signIn` suggests: tried if a proof is refused for its date. */
  private skewHint: number | undefined;
  private readonly channel: BroadcastChannel | null;
  private readonly listeners = new Map<string, Set<(value: never) => void>>();
  private readonly stats = { refreshes: 0, refreshFailures: 0, totalMs: 0, sharedRefreshes: 0, cacheHits: 0 };
  private readonly errors: Record<string, number> = {};
  private current: StoredSession | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private failedAttempts = 0;
  private lastEventId: string | undefined;
  /** With a token provider: the session of the provided token, read from its `sid`. */
  private providedSession: string | undefined;
  private providedOut = false;
  private events: AbortController | null = null;
  private wakeStream: (() => void) | null = null;
  private closed = false;
  private readonly refreshOnce: () => Promise<Tokens>;
  private readonly cleanup: Array<() => void> = [];

  constructor(private readonly options: ClientOptions = {}) {
    const browser = typeof document !== 'undefined';
    this.mode = options.mode ?? (browser ? 'cookie' : 'token');
    const base = options.baseUrl ?? (browser ? location.origin : undefined);
    if (base === undefined) throw new TypeError('baseUrl is required outside browsers');
    this.base = new URL(String(base).replace(/\/?$/, '/'));
    this.name = options.name ?? 'sessiond';
    this.store = options.tokenProvider ? new MemoryStore() : options.store ?? defaultStore(this.name);
    this.http = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.ahead = options.refreshAheadMs ?? REFRESH_AHEAD_MAX_MS;
    this.lockTimeout = options.lockTimeoutMs ?? 10_000;
    this.dpop = options.dpop instanceof DpopKey ? options.dpop : options.dpop ? DpopKey.forOrigin(this.name) : null;
    this.channel = typeof BroadcastChannel === 'function' && !options.tokenProvider ? new BroadcastChannel(this.name) : null;
    if (this.channel) {
      this.channel.onmessage = (message) => this.receive(message.data as Message);
      // Node has BroadcastChannel too (between worker threads): it must not keep a script alive.
      (this.channel as { unref?: () => void }).unref?.();
    }
    this.refreshOnce = singleFlight(() => this.refreshShared());
    if (typeof window !== 'undefined' && typeof window.addEventListener === 'function') {
      const wake = () => this.wake();
      const visible = () => document.visibilityState === 'visible' && wake();
      const offline = () => this.events?.abort();
      window.addEventListener('online', wake);
      window.addEventListener('offline', offline);
      document.addEventListener('visibilitychange', visible);
      this.cleanup.push(() => {
        window.removeEventListener('online', wake);
        window.removeEventListener('offline', offline);
        document.removeEventListener('visibilitychange', visible);
      });
    }
  }

  /** Subscribes to `refreshed`, `signedOut`, `event` (each event of the stream) or `stream`; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => void set.delete(listener);
  }

  private emit<K extends keyof ClientEvents>(type: K, value: ClientEvents[K]): void {
    for (const listener of this.listeners.get(type) ?? []) {
      try {
        (listener as (value: ClientEvents[K]) => void)(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /**
   * Picks up the session this origin already has: a stored access token still valid, else (cookie
   * mode, or a stored refresh token) a refresh. Resolves to whether the client is signed in.
   */
  async start(): Promise<boolean> {
    if (this.options.tokenProvider) {
      this.startEvents();
      return true;
    }
    const stored = await this.store.load().catch(() => null);
    if (stored && stored.expires_at - Date.now() > MIN_VALID_MS) {
      this.adopt(stored);
      return true;
    }
    if (this.mode === 'token' && !stored?.refresh_token) return false;
    try {
      await this.refreshOnce();
      return true;
    } catch {
      return this.current !== null;
    }
  }

  /**
   * Signs in with a pair the application's backend created (`POST /v1/sessions`). In cookie
   * mode its refresh token is spent at once so that the answer moves the new one into the
   * HttpOnly cookie; in token mode the pair is stored encrypted.
   */
  async signIn(pair: TokenPair): Promise<Tokens> {
    const issued = Number(claimsOf(pair.access_token).iat);
    if (issued > 0) this.skewHint = issued * 1000 - Date.now();
    if (this.mode === 'cookie' && pair.refresh_token) {
      return this.withLock(() => this.exchange({ refresh_token: pair.refresh_token! }));
    }
    const stored = this.toStored(pair);
    await this.store.save(stored);
    this.adopt(stored);
    this.post({ t: 'pair', p: this.strip(stored) });
    return this.tokens()!;
  }

  /** The current access token and its expiry, without any request; null when signed out. */
  tokens(): Tokens | null {
    const current = this.current;
    return current && { accessToken: current.access_token, expiresAt: current.expires_at, sessionId: current.session_id };
  }

  /** A valid access token: from memory while it lasts, else after a refresh (shared with other tabs). */
  async accessToken(): Promise<string> {
    if (this.options.tokenProvider) {
      const token = await this.options.tokenProvider();
      if (!token) throw new SessiondError(401, 'unauthenticated', 'no access token');
      return token;
    }
    if (this.current && this.current.expires_at - Date.now() > MIN_VALID_MS) {
      this.stats.cacheHits++;
      return this.current.access_token;
    }
    return (await this.refreshOnce()).accessToken;
  }

  /**
   * With `dpop`: the RFC 7638 thumbprint of this browser's key, which the session is bound to
   * (`dpop_jkt` of `POST /v1/sessions`). Null without `dpop`.
   */
  async dpopThumbprint(): Promise<string | null> {
    return this.dpop ? this.dpop.thumbprint() : null;
  }

  /**
   * With `dpop`: a proof of this browser's key for a request of your own, to send as its `DPoP`
   * header. At login, the application's backend verifies the proof of the login request and
   * creates the session with the thumbprint of its key, so the session is bound from its first
   * token. A relative `url` is taken relative to the page. Null without `dpop`.
   */
  async dpopProof(method: string, url: string | URL): Promise<string | null> {
    const base = typeof location !== 'undefined' ? location.href : this.base;
    return this.dpop ? this.dpop.proof(method, new URL(url, base), { now: Date.now() + this.skew }) : null;
  }

  /** Refreshes now (sharing the request with other tabs that need one too). */
  refresh(): Promise<Tokens> {
    return this.refreshOnce();
  }

  /**
   * `fetch` with the access token attached (and a DPoP proof when the token is bound); a path
   * is taken relative to `baseUrl`. On a 401 it refreshes once and sends the request once more;
   * on a 401 asking for a DPoP nonce, it sends it again with that nonce, once.
   */
  async fetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    const request = new Request(typeof input === 'string' ? new URL(input.replace(/^\//, ''), this.base) : input, init);
    let token = await this.accessToken();
    let refreshed = false;
    let nonceSent = false;
    for (;;) {
      const sent = request.clone();
      let response: Response;
      try {
        await this.authorize(sent.headers, sent.method, sent.url, token);
        response = await this.http(sent);
      } catch (error) {
        throw this.count(networkError(error));
      }
      this.nonces.note(sent.url, response);
      if (response.status !== 401) return response;
      if (this.dpop && !nonceSent && (await asksForNonce(response))) {
        nonceSent = true;
        continue;
      }
      if (refreshed) return response;
      if (this.options.tokenProvider) {
        this.signOutHere('unauthenticated', true);
        return response;
      }
      refreshed = true;
      token = (await this.refreshAfter(token)).accessToken;
    }
  }

  /**
   * Puts `token` in `headers`: `Bearer`, or for a token bound to a key (`cnf.jkt`) with this
   * client's key, `DPoP` and a proof for `method` on `url` that hashes the token (RFC 9449 §7).
   */
  private async authorize(headers: Headers, method: string, url: string, token: string): Promise<void> {
    if (this.dpop && claimsOf(token).cnf?.jkt) {
      headers.set('Authorization', `DPoP ${token}`);
      const options = { accessToken: token, nonce: this.nonces.get(url), now: Date.now() + this.skew };
      headers.set('DPoP', await this.dpop.proof(method, url, options));
    } else {
      headers.set('Authorization', `Bearer ${token}`);
    }
  }

  /** Like [`fetch`], for JSON answers: the parsed body, or a thrown [`SessiondError`]. */
  async json<T>(path: string, init?: RequestInit & { json?: unknown }): Promise<T> {
    const headers = new Headers(init?.headers);
    let body = init?.body;
    if (init?.json !== undefined) {
      headers.set('Content-Type', 'application/json');
      body = JSON.stringify(init.json);
    }
    const response = await this.fetch(path, { ...init, headers, body: body ?? null });
    if (!response.ok) throw this.count(await errorFrom(response));
    return (response.status === 204 ? null : await response.json()) as T;
  }

  /** Ends this session on the server (`POST /v1/logout`) and signs out every tab. */
  async signOut(): Promise<void> {
    try {
      if (this.current) await this.fetch('v1/logout', { method: 'POST' });
    } finally {
      this.signOutHere('signed_out', true);
    }
  }

  metrics(): ClientMetrics {
    const { totalMs, ...counts } = this.stats;
    return { ...counts, averageRefreshMs: counts.refreshes ? totalMs / counts.refreshes : 0, errors: { ...this.errors } };
  }

  /** Stops timers, the stream and the channel (the session stays). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.events?.abort();
    this.channel?.close();
    for (const undo of this.cleanup) undo();
  }

  private count(error: SessiondError): SessiondError {
    this.errors[error.error] = (this.errors[error.error] ?? 0) + 1;
    return error;
  }

  private strip(session: StoredSession): StoredSession {
    const { refresh_token: _secret, ...rest } = session;
    return rest;
  }

  private toStored(pair: TokenPair, previousRefreshToken?: string): StoredSession {
    const stored: StoredSession = {
      access_token: pair.access_token,
      expires_at: Date.now() + pair.expires_in * 1000,
      ttl: pair.expires_in * 1000,
      session_id: pair.session?.id ?? sessionIdOf(pair.access_token),
    };
    const refreshToken = pair.refresh_token ?? previousRefreshToken;
    if (this.mode === 'token' && refreshToken) stored.refresh_token = refreshToken;
    return stored;
  }

  private adopt(session: StoredSession): void {
    const first = !this.current;
    this.current = this.strip(session);
    this.failedAttempts = 0;
    this.schedule();
    this.emit('refreshed', this.tokens()!);
    if (first) this.startEvents();
  }

  private schedule(delay?: number): void {
    clearTimeout(this.timer);
    const current = this.current;
    if (!current || this.closed) return;
    const wait = delay ?? refreshDelay(current.ttl, current.expires_at - Date.now(), Math.random, this.ahead);
    this.timer = setTimeout(() => {
      this.refreshOnce().catch((error: SessiondError) => {
        // Signed out already, or a failure to try again: later, and later still.
        if (this.current && error.error !== 'invalid_refresh_token') {
          const retry = error.retryAfter ? error.retryAfter * 1000 : backoff(this.failedAttempts++, RECONNECT_MIN_MS, RECONNECT_MAX_MS);
          this.schedule(retry);
        }
      });
    }, wait);
    (this.timer as { unref?: () => void }).unref?.();
  }

  /** After a 401 for `stale`: the pair another tab got meanwhile, else a refresh. */
  private async refreshAfter(stale: string): Promise<Tokens> {
    if (this.current && this.current.access_token !== stale && this.current.expires_at - Date.now() > MIN_VALID_MS) {
      return this.tokens()!;
    }
    return this.refreshOnce();
  }

  /**
   * Runs `work` holding the origin-wide refresh lock. A holder that does not let go within the
   * lock timeout (a frozen or hung tab; a closed one lets go at once) has the lock taken from
   * it, by one waiting tab at a time (the others then find that tab's pair in the store).
   */
  private async withLock<T>(work: () => Promise<T>): Promise<T> {
    const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
    if (!locks) return work();
    const name = `${this.name}:refresh`;
    let result: Promise<T> | undefined;
    const run = () => (result = work());
    try {
      await locks.request(name, { signal: AbortSignal.timeout(this.lockTimeout) }, run);
    } catch {
      // Either `work` failed (its error comes from `result`), a takeover broke the lock while
      // `work` ran (it goes on), or the wait timed out: then take the lock over.
      if (!result) {
        await locks
          .request(`${name}:takeover`, async () => {
            await locks.request(name, { ifAvailable: true }, (lock) => lock && run());
            if (!result) await locks.request(name, { steal: true }, run);
          })
          .catch(() => undefined);
      }
    }
    if (!result) throw new SessiondError(0, 'lock_unavailable', 'the refresh lock could not be taken');
    return result;
  }

  /**
   * The refresh every tab agrees on: under the lock, a pair that another tab stored since this
   * one's token was current is adopted (in cookie mode the cookie has already rotated, so
   * refreshing again would spend a dead token); only otherwise does this tab ask the server.
   */
  private refreshShared(): Promise<Tokens> {
    const stale = this.current?.access_token;
    return this.withLock(async () => {
      const stored = await this.store.load().catch(() => null);
      if (stored && stored.access_token !== stale && stored.expires_at - Date.now() > MIN_VALID_MS) {
        if (stored.access_token !== this.current?.access_token) this.stats.sharedRefreshes++;
        this.adopt(stored);
        return this.tokens()!;
      }
      if (this.mode === 'token') {
        if (!stored?.refresh_token) {
          this.signOutHere('unauthenticated', true);
          throw this.count(new SessiondError(401, 'invalid_refresh_token', 'no refresh token stored', { reason: 'unknown' }));
        }
        return this.exchange({ refresh_token: stored.refresh_token });
      }
      return this.exchange(undefined);
    });
  }

  /**
   * `POST /v1/sessions/refresh`, by cookie (`body` undefined) or with the token in the body; with
   * `dpop`, with a proof (sent again once with the server's nonce if it asks for one).
   */
  private async exchange(body: { refresh_token: string } | undefined): Promise<Tokens> {
    const started = performance.now();
    const url = new URL('v1/sessions/refresh', this.base);
    const headers: Record<string, string> = {};
    if (body) headers['Content-Type'] = 'application/json';
    if (this.mode === 'cookie') headers['X-Sessiond-CSRF'] = '1';
    let response: Response;
    let nonceSent = false;
    let skewTried = false;
    for (;;) {
      try {
        const now = Date.now() + this.skew;
        if (this.dpop) headers['DPoP'] = await this.dpop.proof('POST', url, { nonce: this.nonces.get(url), now });
        response = await this.http(url, {
          method: 'POST',
          headers,
          body: body ? JSON.stringify(body) : null,
          credentials: this.mode === 'cookie' ? 'include' : 'omit',
          cache: 'no-store',
          signal: AbortSignal.timeout(this.lockTimeout),
        });
      } catch (error) {
        this.stats.refreshFailures++;
        throw this.count(networkError(error));
      }
      this.nonces.note(url, response);
      if (!this.dpop) break;
      if (!nonceSent && (await asksForNonce(response))) {
        nonceSent = true;
      } else if (!skewTried && this.skewHint !== undefined && (await refusedForClock(response))) {
        // This machine's clock is off: date proofs by the server's, as the login pair tells it.
        skewTried = true;
        this.skew = this.skewHint;
      } else {
        break;
      }
    }
    if (!response.ok) {
      this.stats.refreshFailures++;
      const error = this.count(await errorFrom(response));
      // The session is over (or, by cookie, there never was one): say so in every tab.
      if (
        error.error === 'invalid_refresh_token' ||
        // (A proof refused says nothing of the cookie, and spent nothing.)
        (this.mode === 'cookie' && response.status === 400 && !/dpop/.test(error.error))
      ) {
        this.signOutHere(error.reason ?? 'unauthenticated', error.error === 'invalid_refresh_token');
      }
      throw error;
    }
    const pair = (await response.json()) as TokenPair;
    // Just issued: its iat is the server's clock now, give or take the request's time.
    const issued = Number(claimsOf(pair.access_token).iat);
    if (issued > 0) this.skew = issued * 1000 - Date.now();
    this.stats.refreshes++;
    this.stats.totalMs += performance.now() - started;
    const stored = this.toStored(pair, body?.refresh_token);
    await this.store.save(stored);
    this.adopt(stored);
    this.post({ t: 'pair', p: this.strip(stored) });
    return this.tokens()!;
  }

  private post(message: Message): void {
    this.channel?.postMessage(message);
  }

  private receive(message: Message): void {
    if (message.t === 'pair') {
      if (!this.current || message.p.expires_at > this.current.expires_at) {
        if (this.current) this.stats.sharedRefreshes++;
        this.adopt(message.p);
      }
    } else if (message.t === 'out') {
      this.signOutHere(message.r, false);
    } else if (message.t === 'ev') {
      if (message.id) this.lastEventId = message.id;
      this.handle(message.e, false);
    }
  }

  private signOutHere(reason: string, tellOthers: boolean, event?: ServerEvent): void {
    if (tellOthers) this.post({ t: 'out', r: reason });
    if (this.options.tokenProvider ? this.providedOut : !this.current) return;
    this.providedOut = true;
    this.current = null;
    clearTimeout(this.timer);
    this.events?.abort();
    this.events = null;
    if (tellOthers) this.store.clear().catch(() => undefined);
    this.emit('signedOut', event ? { reason, event } : { reason });
  }

  private handle(event: ServerEvent, relay: boolean): void {
    if (relay) this.post({ t: 'ev', e: event, ...(this.lastEventId ? { id: this.lastEventId } : {}) });
    this.emit('event', event);
    const own = this.current?.session_id || this.providedSession;
    if ((event.type === 'session.revoked' || event.type === 'session.expired') && own && event.session_id === own) {
      this.signOutHere(event.type === 'session.expired' ? 'expired' : 'revoked', relay, event);
    } else if (event.type === 'stream.closed' && event.reason === 'session_ended') {
      this.signOutHere('session_ended', relay, event);
    }
  }

  /** Back online or visible again: catch up after a short random pause, not all at once. */
  private wake(): void {
    setTimeout(() => {
      if (!this.current || this.closed) return;
      this.failedAttempts = 0;
      this.schedule();
      this.wakeStream?.();
    }, Math.random() * 1_000);
  }

  /**
   * Follows the event stream in one tab of the origin, the holder of the events lock, which
   * relays each event to the others; when that tab goes, the next one in line takes over,
   * resuming after the last event relayed.
   */
  private startEvents(): void {
    if (this.options.events === false || this.events || this.closed) return;
    const controller = new AbortController();
    this.events = controller;
    // A provided token is this client's own business: no other tab shares it.
    const locks = typeof navigator !== 'undefined' && !this.options.tokenProvider ? navigator.locks : undefined;
    const follow = () => this.follow(controller.signal);
    (locks ? locks.request(`${this.name}:events`, { signal: controller.signal }, follow) : follow()).catch(() => undefined);
  }

  private async follow(signal: AbortSignal): Promise<void> {
    let attempt = 0;
    let retry = RECONNECT_MIN_MS;
    let nonceSent = false;
    while (!signal.aborted) {
      if (typeof navigator !== 'undefined' && navigator.onLine === false) {
        await new Promise<void>((resolve) => ((this.wakeStream = resolve), signal.addEventListener('abort', () => resolve())));
        continue;
      }
      const stream = new AbortController();
      const stop = () => stream.abort();
      signal.addEventListener('abort', stop, { once: true });
      this.wakeStream = stop;
      try {
        const token = await this.accessToken();
        if (!this.options.tokenProvider && !this.current) return;
        if (this.options.tokenProvider) this.providedSession ??= sessionIdOf(token);
        const url = new URL('v1/events', this.base);
        const headers = new Headers({ Accept: 'text/event-stream' });
        await this.authorize(headers, 'GET', url.href, token);
        if (this.lastEventId) headers.set('Last-Event-ID', this.lastEventId);
        const response = await this.http(url, { headers, signal: stream.signal, cache: 'no-store' });
        this.nonces.note(url, response);
        if (response.status === 401 && this.dpop && !nonceSent && (await asksForNonce(response))) {
          nonceSent = true;
          continue;
        }
        if (response.status === 401 && !this.options.tokenProvider) {
          await this.refreshAfter(token);
          continue;
        }
        if (!response.ok || !response.body) throw this.count(await errorFrom(response));
        attempt = 0;
        nonceSent = false;
        this.emit('stream', { connected: true });
        const parser = new SseParser();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const message of parser.push(value)) {
            if (message.id) this.lastEventId = message.id;
            try {
              this.handle(JSON.parse(message.data) as ServerEvent, true);
            } catch {
              // Not JSON: nothing sessiond sends.
            }
          }
        }
        retry = parser.retry ?? retry;
      } catch (error) {
        if (error instanceof SessiondError && error.error === 'invalid_refresh_token') return;
      } finally {
        signal.removeEventListener('abort', stop);
        this.emit('stream', { connected: false });
      }
      if (signal.aborted) return;
      // The stream ended (a restart, a network change): resume after the last event seen.
      await sleep(Math.max(retry, backoff(attempt++, RECONNECT_MIN_MS, RECONNECT_MAX_MS)), signal);
    }
  }
}

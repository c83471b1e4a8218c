// @sessiond/client in headless Chromium against the real binary: target/debug/sessiond in
// cookie mode on a random port with a temporary SQLite database. The pages load the bundle the
// server ships (/ui/sessiond-client.js), from a blank page of the server's own origin (served
// by the test through request interception), so several tabs of one browser context share
// the refresh cookie, Web Locks, BroadcastChannel and IndexedDB as real tabs do.
//
// Run: cd ui-tests && npm ci && node --test client.test.mjs (after cargo build).

import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const BINARY = process.env.SESSIOND_BIN || join(ROOT, 'target/debug/sessiond');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN_KEY = 'client-test-admin-key-0123456789-abcdefghij';
const ACCESS_TTL_SECONDS = 20;
const LOCK_TIMEOUT_MS = 2000;

let server;
let base;
let dir;
let browser;
let environment;

function startServer(listen) {
  environment = {
    ...process.env,
    SESSIOND_LISTEN: listen,
    SESSIOND_DATABASE_URL: `sqlite://${join(dir, 'sessiond.db')}`,
    SESSIOND_ADMIN_KEYS: ADMIN_KEY,
    // Its own address: DPoP proofs name the URL the page used, which sessiond compares with
    // its issuer URL.
    SESSIOND_ISSUER: `http://${listen}`,
    // Nonces required, so that bound sessions exercise the client's nonce retry; unbound ones
    // send no proof and are not concerned.
    SESSIOND_DPOP_NONCE: 'required',
    SESSIOND_COOKIE_MODE: 'on',
    SESSIOND_ACCESS_TTL: `${ACCESS_TTL_SECONDS}s`,
    SESSIOND_RATE_LIMITS: 'off',
    SESSIOND_EVENT_HEARTBEAT: '1s',
    RUST_LOG: 'warn',
  };
  server = spawn(BINARY, ['serve'], { cwd: dir, env: environment, stdio: ['ignore', 'pipe', 'inherit'] });
  const started = server;
  return new Promise((resolveBase, reject) => {
    let seen = '';
    started.on('exit', (code) => reject(new Error(`sessiond exited with ${code}`)));
    started.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = /sessiond listening on (http:\/\/\S+)/.exec(seen);
      if (match) resolveBase(match[1]);
    });
  });
}

async function stopServer() {
  const stopping = server;
  server = null;
  if (!stopping || stopping.exitCode !== null) return;
  await new Promise((resolveExit) => {
    stopping.once('exit', resolveExit);
    stopping.kill('SIGTERM');
  });
}

/** A port on 127.0.0.1 that was free a moment ago. */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sessiond-client-'));
  base = await startServer(`127.0.0.1:${await freePort()}`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  if (browser) await browser.close();
  await stopServer();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function admin(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status}`);
  return response.status === 204 ? null : response.json();
}

/** The server's count of refreshes that rotated a pair. */
async function rotations() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const match = /^sessiond_refreshes_total\{outcome="rotated"\} (\d+)$/m.exec(text);
  assert.ok(match, 'the refresh counter is exported');
  return Number(match[1]);
}

/** A browser context: one profile, whose pages are tabs sharing cookies, locks and storage. */
async function newProfile() {
  const context = await browser.newContext();
  await context.route(`${base}/sdk-test/**`, (route) =>
    route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>sdk test</title>' }));
  return context;
}

/**
 * A tab with a client (`window.client`) whose events are logged in `window.log`; `options` go
 * to the constructor. Fails the test on uncaught page errors.
 */
async function openTab(context, options = {}) {
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(error.message));
  page.problems = problems;
  await page.goto(`${base}/sdk-test/`);
  await page.evaluate(async (options) => {
    const { SessiondClient } = await import('/ui/sessiond-client.js');
    window.log = [];
    window.client = new SessiondClient({ lockTimeoutMs: 2000, ...options });
    client.on('signedOut', (out) => log.push({ type: 'signedOut', reason: out.reason, at: Date.now() }));
    client.on('event', (event) => log.push({ type: 'event', event, at: Date.now() }));
    client.on('stream', (state) => log.push({ type: 'stream', connected: state.connected, at: Date.now() }));
  }, options);
  return page;
}

const tokensOf = (page) => page.evaluate(() => client.tokens());

async function waitForStream(pages) {
  await Promise.any(pages.map((page) =>
    page.waitForFunction(() => log.some((entry) => entry.type === 'stream' && entry.connected), null, { timeout: 5000 })));
}

async function assertValid(accessToken) {
  const response = await fetch(`${base}/v1/sessions/current`, { headers: { Authorization: `Bearer ${accessToken}` } });
  assert.equal(response.status, 200, 'the access token is accepted');
}

test('ten tabs whose tokens expire together make one refresh and share its pair', async () => {
  const context = await newProfile();
  const pair = await admin('POST', '/v1/sessions', { user_id: 'tabs-ten' });
  const first = await openTab(context);
  await first.evaluate((pair) => client.signIn(pair), pair);
  const tabs = [first];
  for (let index = 1; index < 10; index++) tabs.push(await openTab(context));
  const signedIn = await Promise.all(tabs.slice(1).map((tab) => tab.evaluate(() => client.start())));
  assert.deepEqual(signedIn, Array(9).fill(true));
  const before = await Promise.all(tabs.map(tokensOf));
  assert.equal(new Set(before.map((tokens) => tokens.accessToken)).size, 1, 'every tab adopted the stored token');
  const rotatedBefore = await rotations();

  // Every tab's timer comes due about a third of the lifetime before expiry.
  await Promise.all(tabs.map((tab) => tab.waitForFunction(
    (old) => client.tokens() && client.tokens().accessToken !== old, before[0].accessToken,
    { timeout: ACCESS_TTL_SECONDS * 1000, polling: 100 })));
  const afterwards = await Promise.all(tabs.map(tokensOf));
  assert.equal(await rotations() - rotatedBefore, 1, 'the server rotated the pair once');
  assert.equal(new Set(afterwards.map((tokens) => tokens.accessToken)).size, 1, 'every tab has the same new token');
  await assertValid(afterwards[0].accessToken);
  const metrics = await Promise.all(tabs.map((tab) => tab.evaluate(() => client.metrics())));
  // The first tab's sign-in was a refresh too (it moved the token into the cookie).
  assert.equal(metrics.reduce((sum, m) => sum + m.refreshes, 0), 2);
  assert.equal(metrics.filter((m) => m.sharedRefreshes >= 1).length, 9, JSON.stringify(metrics));
  for (const tab of tabs) assert.deepEqual(tab.problems, []);
  await context.close();
});

test('a tab that hangs holding the refresh lock does not stall the others beyond the lock timeout', async () => {
  const context = await newProfile();
  const pair = await admin('POST', '/v1/sessions', { user_id: 'tabs-hung' });
  const hung = await openTab(context);
  await hung.evaluate((pair) => client.signIn(pair), pair);
  const others = [await openTab(context), await openTab(context)];
  for (const tab of others) assert.equal(await tab.evaluate(() => client.start()), true);
  const old = (await tokensOf(hung)).accessToken;
  const rotatedBefore = await rotations();

  // The hung tab's refresh request never gets an answer (nor reaches the server), and then its
  // script hangs in a loop, so not even its own request timeout runs: it keeps the lock until
  // the others take it.
  await hung.route(`${base}/v1/sessions/refresh`, () => {});
  await hung.evaluate(() => { window.hungRefresh = client.refresh().catch((error) => error.error); });
  await hung.waitForTimeout(200);
  await hung.evaluate(() => setTimeout(() => {
    const until = Date.now() + 6000;
    while (Date.now() < until);
  }, 50));
  const started = Date.now();
  const refreshed = await Promise.all(others.map((tab) => tab.evaluate(() => client.refresh().then((t) => t.accessToken))));
  const waited = Date.now() - started;
  assert.ok(waited >= LOCK_TIMEOUT_MS - 100, `the others waited for the lock (${waited} ms)`);
  assert.ok(waited < LOCK_TIMEOUT_MS + 1500, `then took it over within the timeout (${waited} ms)`);
  assert.equal(refreshed[0], refreshed[1]);
  assert.notEqual(refreshed[0], old);
  assert.equal(await rotations() - rotatedBefore, 1);
  await assertValid(refreshed[0]);
  // Back from its loop, the hung tab adopts the others' pair instead of refreshing again.
  await hung.waitForFunction((token) => client.tokens().accessToken === token, refreshed[0], { timeout: 10000 });
  assert.equal(await rotations() - rotatedBefore, 1);
  await hung.close();
  await context.close();
});

test('a revocation from another device signs every tab out within a second', async () => {
  const context = await newProfile();
  const pair = await admin('POST', '/v1/sessions', { user_id: 'tabs-revoked' });
  const tabs = [await openTab(context)];
  await tabs[0].evaluate((pair) => client.signIn(pair), pair);
  for (let index = 0; index < 3; index++) {
    const tab = await openTab(context);
    assert.equal(await tab.evaluate(() => client.start()), true);
    tabs.push(tab);
  }
  await waitForStream(tabs);
  const revokedAt = Date.now();
  await admin('DELETE', `/v1/sessions/${pair.session.id}`);
  const outs = await Promise.all(tabs.map((tab) => tab.waitForFunction(
    () => log.find((entry) => entry.type === 'signedOut'), null, { timeout: 3000 }).then((handle) => handle.jsonValue())));
  for (const out of outs) {
    assert.equal(out.reason, 'revoked');
    assert.ok(out.at - revokedAt <= 1000, `signed out ${out.at - revokedAt} ms after the revocation`);
  }
  for (const tab of tabs) assert.equal(await tab.evaluate(() => client.tokens()), null);
  await context.close();
});

test('token mode keeps no plaintext refresh token in any storage', async () => {
  const context = await newProfile();
  const pair = await admin('POST', '/v1/sessions', { user_id: 'tabs-token-mode' });
  let tab = await openTab(context, { mode: 'token', name: 'token-mode' });
  await tab.evaluate((pair) => client.signIn(pair), pair);
  await tab.evaluate(() => client.refresh());
  await tab.evaluate(() => localStorage.setItem('unrelated', 'x'));

  const dump = await tab.evaluate(async () => {
    const text = (value) => {
      if (value instanceof CryptoKey) return JSON.stringify({ cryptoKey: value.type, extractable: value.extractable });
      if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
        const bytes = new Uint8Array(value.buffer ?? value, value.byteOffset ?? 0, value.byteLength);
        return `bytes:${String.fromCharCode(...bytes)}`;
      }
      if (value && typeof value === 'object') return Object.entries(value).map(([k, v]) => `${k}=${text(v)}`).join(';');
      return String(value);
    };
    const parts = [];
    for (const { name } of await indexedDB.databases()) {
      const db = await new Promise((ok, fail) => { const r = indexedDB.open(name); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
      for (const storeName of db.objectStoreNames) {
        const store = db.transaction(storeName).objectStore(storeName);
        const [keys, values] = await Promise.all([store.getAllKeys(), store.getAll()].map((r) => new Promise((ok) => { r.onsuccess = () => ok(r.result); })));
        keys.forEach((key, index) => parts.push(`idb ${name}/${storeName}/${key}: ${text(values[index])}`));
      }
      db.close();
    }
    for (const storage of [localStorage, sessionStorage]) {
      for (let index = 0; index < storage.length; index++) parts.push(`storage ${storage.key(index)}: ${storage.getItem(storage.key(index))}`);
    }
    return parts;
  });
  const everything = dump.join('\n');
  assert.match(everything, /idb token-mode\/kv\/session: iv=bytes:/, 'the session is stored, encrypted');
  assert.match(everything, /"cryptoKey":"secret","extractable":false/, 'under a non-extractable key');
  assert.ok(!everything.includes('sdr_'), 'no refresh token in storage');
  assert.ok(!everything.includes(pair.refresh_token));
  assert.ok(!everything.includes(pair.access_token.split('.')[1]), 'nor the access token');

  // The stored (encrypted) refresh token still works after a reload.
  await tab.close();
  tab = await openTab(context, { mode: 'token', name: 'token-mode' });
  assert.equal(await tab.evaluate(() => client.start()), true);
  const rotatedBefore = await rotations();
  const tokens = await tab.evaluate(() => client.refresh());
  assert.equal(await rotations() - rotatedBefore, 1);
  await assertValid(tokens.accessToken);
  assert.deepEqual(tab.problems, []);
  await context.close();
});

/**
 * What an application's login route does with the `DPoP` header of the login request: checks
 * the proof (its signature under the key it carries, type, method, URL, age) and returns the
 * RFC 7638 thumbprint of that key.
 */
async function backendTakesThumbprint(proof, loginUrl) {
  const [head, body, signature] = proof.split('.');
  const header = JSON.parse(Buffer.from(head, 'base64url'));
  const claims = JSON.parse(Buffer.from(body, 'base64url'));
  assert.deepEqual([header.typ, header.alg, header.jwk.kty, header.jwk.crv], ['dpop+jwt', 'ES256', 'EC', 'P-256']);
  assert.equal(header.jwk.d, undefined, 'no private key material');
  const key = await crypto.subtle.importKey('jwk', header.jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const valid = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, Buffer.from(signature, 'base64url'), Buffer.from(`${head}.${body}`));
  assert.ok(valid, 'the login proof is signed by its key');
  assert.deepEqual([claims.htm, claims.htu], ['POST', loginUrl]);
  assert.ok(Math.abs(claims.iat - Date.now() / 1000) < 60, `iat ${claims.iat}`);
  const { crv, kty, x, y } = header.jwk;
  return createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
}

test('a session bound to the browser key refreshes and calls the API with DPoP proofs, and the key cannot be exported', async () => {
  const context = await newProfile();
  const name = 'dpop';
  let tab = await openTab(context, { dpop: true, name });
  // The login request carries a proof of the key; the application's backend verifies it and
  // creates the session with the thumbprint of its key.
  const loginProof = await tab.evaluate((url) => client.dpopProof('POST', url), `${base}/login`);
  const jkt = await backendTakesThumbprint(loginProof, `${base}/login`);
  assert.equal(jkt, await tab.evaluate(() => client.dpopThumbprint()));
  const pair = await admin('POST', '/v1/sessions', { user_id: 'tabs-dpop', dpop_jkt: jkt });
  assert.equal(pair.token_type, 'DPoP');

  // A copy of the refresh token without the key is refused, and spends nothing.
  const stolen = await fetch(`${base}/v1/sessions/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: pair.refresh_token }),
  });
  assert.equal(stolen.status, 400);
  assert.equal((await stolen.json()).error, 'invalid_dpop_proof');

  const sent = [];
  const watch = (page) => page.on('request', (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith('/v1/')) sent.push({ path, headers: request.headers() });
  });
  watch(tab);
  await tab.evaluate((pair) => client.signIn(pair), pair);  // cookie mode: a refresh, with a proof
  const rotatedBefore = await rotations();
  const refreshed = await tab.evaluate(() => client.refresh());
  assert.equal(await rotations() - rotatedBefore, 1);
  const claims = JSON.parse(Buffer.from(refreshed.accessToken.split('.')[1], 'base64url'));
  assert.equal(claims.cnf.jkt, jkt, 'the new access token is bound to the browser key');
  const session = await tab.evaluate(() => client.json('/v1/sessions/current'));
  assert.equal(session.id, pair.session.id);
  // The event stream is opened with the bound token and a proof too.
  await waitForStream([tab]);
  const streams = sent.filter((request) => request.path === '/v1/events');
  assert.ok(streams.length >= 1 && streams.every((request) => /^DPoP /.test(request.headers.authorization) && request.headers.dpop),
    JSON.stringify(streams.map((request) => request.headers.authorization?.slice(0, 10))));

  const refreshes = sent.filter((request) => request.path === '/v1/sessions/refresh');
  assert.ok(refreshes.length >= 2 && refreshes.every((request) => request.headers.dpop), 'every refresh carries a proof');
  assert.ok(refreshes.some((request) => JSON.parse(Buffer.from(request.headers.dpop.split('.')[1], 'base64url')).nonce),
    'the server\'s nonce is used');
  const current = sent.filter((request) => request.path === '/v1/sessions/current');
  assert.ok(current.length >= 1);
  for (const request of current) {
    assert.equal(request.headers.authorization, `DPoP ${refreshed.accessToken}`);
    const [header, payload] = request.headers.dpop.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url')));
    assert.deepEqual([header.typ, header.alg, header.jwk.crv, header.jwk.d], ['dpop+jwt', 'ES256', 'P-256', undefined]);
    assert.equal(payload.htm, 'GET');
    assert.equal(payload.htu, `${base}/v1/sessions/current`);
    assert.equal(payload.ath, createHash('sha256').update(refreshed.accessToken).digest('base64url'));
  }
  // The bound token as a plain bearer token: refused.
  const bearer = await fetch(`${base}/v1/sessions/current`, { headers: { Authorization: `Bearer ${refreshed.accessToken}` } });
  assert.equal(bearer.status, 401);

  // The key in IndexedDB: a P-256 CryptoKey pair whose private half cannot be exported.
  const stored = await tab.evaluate(async (name) => {
    const db = await new Promise((ok, fail) => { const r = indexedDB.open(name); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
    const pair = await new Promise((ok) => { const r = db.transaction('kv').objectStore('kv').get('dpop'); r.onsuccess = () => ok(r.result); });
    db.close();
    const refused = [];
    for (const format of ['pkcs8', 'jwk']) {
      await crypto.subtle.exportKey(format, pair.privateKey).then(() => refused.push(`${format}: exported`), (error) => refused.push(`${format}: ${error.name}`));
    }
    return {
      type: pair.privateKey.type, extractable: pair.privateKey.extractable, usages: pair.privateKey.usages,
      algorithm: pair.privateKey.algorithm, refused,
    };
  }, name);
  assert.deepEqual(stored, {
    type: 'private', extractable: false, usages: ['sign'], algorithm: { name: 'ECDSA', namedCurve: 'P-256' },
    refused: ['pkcs8: InvalidAccessError', 'jwk: InvalidAccessError'],
  });

  // After a reload, and in another tab, the same key: the session refreshes on.
  await tab.close();
  tab = await openTab(context, { dpop: true, name });
  const other = await openTab(context, { dpop: true, name });
  assert.deepEqual(await Promise.all([tab, other].map((page) => page.evaluate(() => client.dpopThumbprint()))), [jkt, jkt]);
  for (const page of [tab, other]) assert.equal(await page.evaluate(() => client.start()), true);
  const rotatedBeforeAgain = await rotations();
  const again = await other.evaluate(() => client.refresh());
  assert.equal(await rotations() - rotatedBeforeAgain, 1, 'the other tab refreshed with the shared key');
  assert.notEqual(again.accessToken, refreshed.accessToken);
  assert.equal((await other.evaluate(() => client.json('/v1/sessions/current'))).id, pair.session.id);
  for (const page of [tab, other]) assert.deepEqual(page.problems, []);
  await context.close();
});

// Last, since it restarts the server.
test('the event stream resumes after a restart with Last-Event-ID and misses no revocation', async () => {
  const context = await newProfile();
  const user = 'tabs-restart';
  const pair = await admin('POST', '/v1/sessions', { user_id: user });
  const tabs = [await openTab(context)];
  await tabs[0].evaluate((pair) => client.signIn(pair), pair);
  tabs.push(await openTab(context));
  assert.equal(await tabs[1].evaluate(() => client.start()), true);
  const streams = [];
  for (const tab of tabs) {
    tab.on('request', (request) => {
      if (new URL(request.url()).pathname === '/v1/events') streams.push(request.headers());
    });
  }
  await waitForStream(tabs);
  // An event seen live, so there is a cursor to resume after.
  const other = await admin('POST', '/v1/sessions', { user_id: user });
  await Promise.all(tabs.map((tab) => tab.waitForFunction(
    (id) => log.some((entry) => entry.type === 'event' && entry.event.type === 'session.created' && entry.event.session_id === id),
    other.session.id, { timeout: 3000 })));

  // While the server is down, the other session is revoked on the same database.
  await stopServer();
  execFileSync(BINARY, ['sessions', 'revoke', other.session.id], { cwd: dir, env: environment, stdio: ['ignore', 'pipe', 'inherit'] });
  assert.equal(await startServer(new URL(base).host), base);
  await Promise.all(tabs.map((tab) => tab.waitForFunction(
    (id) => log.some((entry) => entry.type === 'event' && entry.event.type === 'session.revoked' && entry.event.session_id === id),
    other.session.id, { timeout: 15000 })));
  assert.ok(streams.some((headers) => headers['last-event-id']), `a reconnect sent Last-Event-ID: ${JSON.stringify(streams)}`);
  assert.ok(streams.every((headers) => /^Bearer /.test(headers.authorization || '')));
  // Still signed in: it was another session.
  for (const tab of tabs) assert.notEqual(await tokensOf(tab), null);

  // And the stream is live again: revoking this session signs both tabs out.
  await admin('DELETE', `/v1/sessions/${pair.session.id}`);
  for (const tab of tabs) {
    await tab.waitForFunction(() => log.some((entry) => entry.type === 'signedOut'), null, { timeout: 3000 });
    assert.deepEqual(tab.problems, []);
  }
  await context.close();
});

// SessiondClient in Node (no document, IndexedDB, locks or BroadcastChannel needed) against a
// fake sessiond: token mode, memory store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SessiondClient, SessiondError } from '../dist/index.js';

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

function pair(n, expiresIn = 900) {
  return {
    access_token: `access-${n}`, token_type: 'Bearer', expires_in: expiresIn,
    access_token_expires_at: '', refresh_token: `sdr_refresh-${n}`, refresh_token_expires_at: '',
    session: { id: 'session-1' },
  };
}

/** A fake server: refreshes rotate `sdr_refresh-N` to N+1; `/v1/things` accepts `live` tokens. */
function fakeServer() {
  const server = { generation: 1, refreshes: 0, live: new Set(['access-1']), calls: [] };
  server.fetch = async (input, init) => {
    const request = new Request(input, init);
    const path = new URL(request.url).pathname;
    server.calls.push(`${request.method} ${path}`);
    if (path === '/v1/sessions/refresh') {
      const body = await request.json();
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (body.refresh_token !== `sdr_refresh-${server.generation}`) {
        return json(401, { error: 'invalid_refresh_token', message: 'revoked', reason: 'revoked', request_id: 'r-1' });
      }
      server.refreshes++;
      server.generation++;
      server.live = new Set([`access-${server.generation}`]);
      return json(200, pair(server.generation));
    }
    if (path === '/v1/things') {
      const token = request.headers.get('authorization')?.replace('Bearer ', '');
      return server.live.has(token) && !server.refuseAll
        ? json(200, { ok: token })
        : json(401, { error: 'unauthenticated', message: 'expired' }, { 'x-request-id': 'h-1' });
    }
    return json(404, { error: 'not_found', message: 'no' });
  };
  return server;
}

const client = (server) =>
  new SessiondClient({ baseUrl: 'http://sessiond.test', mode: 'token', events: false, fetch: server.fetch });

test('outside a browser the default mode is token mode, and a base URL is required', () => {
  assert.throws(() => new SessiondClient(), TypeError);
  assert.equal(new SessiondClient({ baseUrl: 'http://x', events: false }).mode, 'token');
});

test('a 401 refreshes once and retries once', async () => {
  const server = fakeServer();
  const sessiond = client(server);
  await sessiond.signIn(pair(1));
  server.live.clear(); // the server no longer takes access-1 (it expired early, say)
  const answer = await sessiond.json('/v1/things');
  assert.deepEqual(answer, { ok: 'access-2' });
  assert.deepEqual(server.calls, ['GET /v1/things', 'POST /v1/sessions/refresh', 'GET /v1/things']);
  assert.equal(sessiond.metrics().refreshes, 1);
  sessiond.close();
});

test('a second 401 is handed back, not retried again', async () => {
  const server = fakeServer();
  const sessiond = client(server);
  await sessiond.signIn(pair(1));
  server.refuseAll = true;
  const response = await sessiond.fetch('/v1/things');
  assert.equal(response.status, 401);
  assert.equal(server.calls.filter((call) => call === 'GET /v1/things').length, 2);
  assert.equal(server.refreshes, 1);
  sessiond.close();
});

test('callers that need a refresh at once share one request', async () => {
  const server = fakeServer();
  const sessiond = client(server);
  await sessiond.signIn(pair(1, 1)); // already inside the 5 s margin: every caller must refresh
  const tokens = await Promise.all(Array.from({ length: 5 }, () => sessiond.accessToken()));
  assert.deepEqual(new Set(tokens), new Set(['access-2']));
  assert.equal(server.refreshes, 1);
  assert.equal(await sessiond.accessToken(), 'access-2');
  assert.equal(sessiond.metrics().cacheHits, 1);
  sessiond.close();
});

test('a refused refresh signs out with the reason and counts the error', async () => {
  const server = fakeServer();
  const sessiond = client(server);
  await sessiond.signIn(pair(1));
  server.generation = 99; // the session was revoked elsewhere
  const outs = [];
  sessiond.on('signedOut', (out) => outs.push(out.reason));
  await assert.rejects(sessiond.refresh(), (error) => {
    assert.ok(error instanceof SessiondError);
    assert.equal(error.error, 'invalid_refresh_token');
    assert.equal(error.reason, 'revoked');
    assert.equal(error.requestId, 'r-1');
    return true;
  });
  assert.deepEqual(outs, ['revoked']);
  assert.equal(sessiond.tokens(), null);
  const metrics = sessiond.metrics();
  assert.equal(metrics.refreshFailures, 1);
  assert.deepEqual(metrics.errors, { invalid_refresh_token: 1 });
  assert.equal(await sessiond.start(), false, 'nothing left to sign in with');
  sessiond.close();
});

test('a refresh is timed and kept in the metrics', async () => {
  const server = fakeServer();
  const sessiond = client(server);
  await sessiond.signIn(pair(1));
  await sessiond.refresh();
  const metrics = sessiond.metrics();
  assert.equal(metrics.refreshes, 1);
  assert.ok(metrics.averageRefreshMs >= 15, `${metrics.averageRefreshMs} ms`);
  assert.equal(metrics.sharedRefreshes, 0);
  sessiond.close();
});

test('coming back online or visible many times at once costs one refresh, after a pause', async () => {
  // A page's own events, as a browser fires them; the client listens on these globals.
  const previous = { window: globalThis.window, document: globalThis.document };
  globalThis.window = new EventTarget();
  globalThis.document = Object.assign(new EventTarget(), { visibilityState: 'visible' });
  try {
    const server = fakeServer();
    const reachable = server.fetch;
    server.fetch = async (input, init) => {
      if (server.down) throw new TypeError('network is down');
      return reachable(input, init);
    };
    const sessiond = client(server);
    server.down = true;
    await sessiond.signIn(pair(1, 1)); // due at once, while the network is down
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(server.refreshes, 0);
    server.down = false;
    const before = server.calls.length;
    for (let i = 0; i < 20; i++) {
      globalThis.window.dispatchEvent(new Event('online'));
      globalThis.document.dispatchEvent(new Event('visibilitychange'));
    }
    assert.equal(server.calls.length, before, 'nothing is sent in the same instant');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const refreshes = server.calls.slice(before).filter((call) => call === 'POST /v1/sessions/refresh');
    assert.equal(refreshes.length, 1, `${refreshes.length} refresh requests after 40 wake-ups`);
    assert.equal(server.refreshes, 1);
    assert.equal(await sessiond.accessToken(), 'access-2');
    sessiond.close();
  } finally {
    globalThis.window = previous.window;
    globalThis.document = previous.document;
  }
});

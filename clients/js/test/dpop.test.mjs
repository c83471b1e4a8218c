// DPoP in Node (which has WebCrypto): the key, its thumbprint and its proofs, each proof checked
// for real (signature verified with the public key it carries, claims compared with what was
// asked), and the client sending proofs on refresh and on requests against a fake sessiond
// that checks them the same way and asks for nonces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { DpopKey, SessiondClient, proofUrl } from '../dist/index.js';

const fromBase64url = (text) => Buffer.from(text, 'base64url');
const sha256 = (text) => createHash('sha256').update(text).digest('base64url');

/** RFC 7638 for an EC key, computed here independently of the client. */
const thumbprintOf = (jwk) => sha256(`{"crv":"${jwk.crv}","kty":"${jwk.kty}","x":"${jwk.x}","y":"${jwk.y}"}`);

/**
 * Checks a DPoP proof as a server does (RFC 9449 §4.3) and returns its header and claims.
 * Throws on any mismatch.
 */
async function verifyProof(proof, { method, url, accessToken, nonce, now = Date.now() }) {
  assert.equal(typeof proof, 'string', 'a DPoP header is sent');
  const parts = proof.split('.');
  assert.equal(parts.length, 3, 'a compact JWS');
  const header = JSON.parse(fromBase64url(parts[0]));
  const claims = JSON.parse(fromBase64url(parts[1]));
  assert.equal(header.typ, 'dpop+jwt');
  assert.equal(header.alg, 'ES256');
  assert.deepEqual(Object.keys(header.jwk).sort(), ['crv', 'kty', 'x', 'y'], 'a public key only');
  const key = await crypto.subtle.importKey('jwk', header.jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const valid = await crypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' },
    key,
    fromBase64url(parts[2]),
    new TextEncoder().encode(`${parts[0]}.${parts[1]}`),
  );
  assert.ok(valid, 'the signature verifies with the embedded key');
  assert.equal(claims.htm, method);
  assert.equal(claims.htu, url);
  assert.ok(Math.abs(claims.iat - now / 1000) <= 2, `iat ${claims.iat}, now ${now / 1000}`);
  assert.match(claims.jti, /^[A-Za-z0-9_-]{22}$/);
  assert.equal(claims.ath, accessToken === undefined ? undefined : sha256(accessToken));
  assert.equal(claims.nonce, nonce);
  return { header, claims, jkt: thumbprintOf(header.jwk) };
}

/** A KeyValue on a Map, with a turn of the event loop per call as IndexedDB has. */
function mapKeyValue(map = new Map()) {
  const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
  return {
    map,
    async get(key) { await tick(); return map.get(key); },
    async put(key, value) { await tick(); map.set(key, value); },
    async delete(key) { await tick(); map.delete(key); },
    async putIfAbsent(key, value) {
      await tick();
      if (!map.has(key)) map.set(key, value);
      return map.get(key);
    },
  };
}

test('a proof is an ES256 JWS signed by the key, with the method, the URL without query and a fresh id', async () => {
  const key = new DpopKey();
  const first = await verifyProof(await key.proof('post', 'https://Auth.example.com/v1/sessions/refresh?x=1#top'), {
    method: 'POST',
    url: 'https://auth.example.com/v1/sessions/refresh',
  });
  const second = await verifyProof(await key.proof('POST', 'https://auth.example.com/v1/sessions/refresh'), {
    method: 'POST',
    url: 'https://auth.example.com/v1/sessions/refresh',
  });
  assert.notEqual(first.claims.jti, second.claims.jti, 'every proof has its own jti');
  assert.equal(first.jkt, await key.thumbprint(), 'the thumbprint is RFC 7638 of the key in the proofs');
  assert.equal(second.jkt, first.jkt);
  assert.match(await key.thumbprint(), /^[A-Za-z0-9_-]{43}$/);
});

test('a proof for a resource request hashes the access token, and carries the nonce it is given', async () => {
  const key = new DpopKey();
  const token = 'eyJhbGciOiJFZERTQSJ9.eyJjbmYiOnsiamt0IjoiYSJ9fQ.c2ln';
  await verifyProof(await key.proof('GET', 'http://127.0.0.1:8080/v1/sessions/current', { accessToken: token, nonce: 'n-1' }), {
    method: 'GET',
    url: 'http://127.0.0.1:8080/v1/sessions/current',
    accessToken: token,
    nonce: 'n-1',
  });
});

test('a proof signed by one key does not verify under another', async () => {
  const [one, other] = [new DpopKey(), new DpopKey()];
  const proof = await one.proof('GET', 'https://a.example/x');
  const { jwk } = JSON.parse(fromBase64url((await other.proof('GET', 'https://a.example/x')).split('.')[0]));
  const [, body, signature] = proof.split('.');
  const swapped = `${Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk })).toString('base64url')}.${body}.${signature}`;
  await assert.rejects(verifyProof(swapped, { method: 'GET', url: 'https://a.example/x' }), /signature/);
});

test('the key is stored as a non-extractable CryptoKey pair, shared by every tab that opens it', async () => {
  const kv = mapKeyValue();
  const tabs = [new DpopKey(kv), new DpopKey(kv), new DpopKey(kv)];
  const thumbprints = await Promise.all(tabs.map((tab) => tab.thumbprint()));
  assert.equal(new Set(thumbprints).size, 1, 'tabs generating at once end up with one key');
  const stored = kv.map.get('dpop');
  assert.ok(stored.privateKey instanceof CryptoKey);
  assert.equal(stored.privateKey.extractable, false);
  assert.deepEqual(stored.privateKey.usages, ['sign']);
  await assert.rejects(crypto.subtle.exportKey('jwk', stored.privateKey), /not extractable/i);
  await assert.rejects(crypto.subtle.exportKey('pkcs8', stored.privateKey), /not extractable/i);
  // A reload: a new DpopKey on the same storage signs with the same key.
  const reloaded = new DpopKey(kv);
  const { jkt } = await verifyProof(await reloaded.proof('GET', 'https://a.example/x'), { method: 'GET', url: 'https://a.example/x' });
  assert.equal(jkt, thumbprints[0]);
});

test('storage that fails leaves a key in memory that still signs', async () => {
  const broken = {
    get: async () => { throw new Error('IndexedDB refused'); },
    put: async () => { throw new Error('IndexedDB refused'); },
    delete: async () => { throw new Error('IndexedDB refused'); },
    putIfAbsent: async () => { throw new Error('IndexedDB refused'); },
  };
  const key = new DpopKey(broken);
  const { jkt } = await verifyProof(await key.proof('GET', 'https://a.example/x'), { method: 'GET', url: 'https://a.example/x' });
  assert.equal(jkt, await key.thumbprint());
});

test('proofUrl drops query and fragment and normalises case and default port', () => {
  assert.equal(proofUrl('HTTPS://Api.Example.com:443/a/B?q=1#f'), 'https://api.example.com/a/B');
  assert.equal(proofUrl('http://127.0.0.1:8080/x'), 'http://127.0.0.1:8080/x');
});

// A fake sessiond with DPoP: sessions are bound to the key of their first proof, tokens of a
// bound session carry cnf.jkt, and nonces are required on refresh and on /v1/things; each
// answer carries the next nonce.
const BASE = 'http://sessiond.test';

const jwt = (claims) =>
  `${Buffer.from('{"alg":"EdDSA","typ":"at+jwt"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`;

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

function dpopServer({ requireNonce = true, aheadMs = 0 } = {}) {
  const server = { generation: 1, jkt: null, nonce: 'nonce-0', issued: 0, calls: [], proofs: [] };
  const now = () => Date.now() + aheadMs;
  const nextNonce = () => (server.nonce = `nonce-${++server.issued}`);
  server.pair = (n) => ({
    access_token: jwt({ sid: 'session-1', n, iat: Math.floor(now() / 1000), ...(server.jkt ? { cnf: { jkt: server.jkt } } : {}) }),
    token_type: server.jkt ? 'DPoP' : 'Bearer',
    expires_in: 900,
    access_token_expires_at: '',
    refresh_token: `sdr_refresh-${n}`,
    refresh_token_expires_at: '',
    session: { id: 'session-1' },
  });
  server.fetch = async (input, init) => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const proof = request.headers.get('dpop');
    const authorization = request.headers.get('authorization');
    server.calls.push(`${request.method} ${url.pathname} ${authorization?.split(' ')[0] ?? '-'}${proof ? ' +proof' : ''}`);
    if (url.pathname === '/v1/sessions/refresh') {
      const body = await request.json();
      if (body.refresh_token !== `sdr_refresh-${server.generation}`) return json(401, { error: 'invalid_refresh_token', message: 'no' });
      if (server.jkt && !proof) return json(400, { error: 'invalid_dpop_proof', message: 'bound' });
      if (proof) {
        const claims = JSON.parse(fromBase64url(proof.split('.')[1]));
        if (requireNonce && claims.nonce !== server.nonce) {
          return json(400, { error: 'use_dpop_nonce', message: 'nonce' }, { 'dpop-nonce': nextNonce() });
        }
        const age = now() / 1000 - claims.iat;
        if (age > 65 || age < -5) {
          server.calls.push(`refused: ${age > 0 ? 'stale' : 'from_the_future'}`);
          return json(400, { error: 'invalid_dpop_proof', message: 'date', reason: age > 0 ? 'stale' : 'from_the_future' });
        }
        const { jkt } = await verifyProof(proof, {
          method: 'POST',
          url: `${BASE}/v1/sessions/refresh`,
          nonce: requireNonce ? server.nonce : undefined,
          now: now(),
        });
        if (server.jkt && jkt !== server.jkt) return json(400, { error: 'invalid_dpop_proof', message: 'other key' });
        server.jkt = jkt;
        server.proofs.push(claims);
      }
      server.generation++;
      return json(200, server.pair(server.generation), requireNonce ? { 'dpop-nonce': nextNonce() } : {});
    }
    if (url.pathname === '/v1/things') {
      const [scheme, token] = authorization.split(' ');
      const claims = JSON.parse(fromBase64url(token.split('.')[1]));
      if (claims.n !== server.generation) return json(401, { error: 'unauthenticated', message: 'stale' });
      if (claims.cnf) {
        if (scheme !== 'DPoP') return json(401, { error: 'unauthenticated', message: 'bearer' }, { 'www-authenticate': 'DPoP error="invalid_token"' });
        const asked = JSON.parse(fromBase64url(proof.split('.')[1]));
        if (requireNonce && asked.nonce !== server.nonce) {
          return json(401, { error: 'unauthenticated', message: 'nonce' }, {
            'www-authenticate': 'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"',
            'dpop-nonce': nextNonce(),
          });
        }
        const { jkt } = await verifyProof(proof, {
          method: request.method,
          url: `${BASE}/v1/things`,
          accessToken: token,
          nonce: requireNonce ? server.nonce : undefined,
          now: now(),
        });
        if (jkt !== claims.cnf.jkt) return json(401, { error: 'unauthenticated', message: 'key' });
        server.proofs.push(asked);
      } else if (scheme !== 'Bearer' || proof) {
        return json(401, { error: 'unauthenticated', message: 'scheme' });
      }
      return json(200, { ok: claims.n });
    }
    return json(404, { error: 'not_found', message: 'no' });
  };
  return server;
}

const dpopClient = (server, dpop = new DpopKey()) =>
  new SessiondClient({ baseUrl: BASE, mode: 'token', events: false, fetch: (input, init) => server.fetch(input, init), dpop });

test('a login proof names the login request and is signed by the key of the thumbprint', async () => {
  const key = new DpopKey();
  const sessiond = new SessiondClient({ baseUrl: BASE, mode: 'token', events: false, dpop: key });
  const { jkt } = await verifyProof(await sessiond.dpopProof('post', 'https://app.example/login?next=%2F'), {
    method: 'POST',
    url: 'https://app.example/login',
  });
  assert.equal(jkt, await sessiond.dpopThumbprint());
  // Relative to the base URL outside a page.
  await verifyProof(await sessiond.dpopProof('POST', 'login'), { method: 'POST', url: `${BASE}/login` });
  sessiond.close();
});

test('without dpop the client has no thumbprint and sends no proof', async () => {
  const server = dpopServer({ requireNonce: false });
  const sessiond = new SessiondClient({ baseUrl: BASE, mode: 'token', events: false, fetch: server.fetch });
  assert.equal(await sessiond.dpopThumbprint(), null);
  assert.equal(await sessiond.dpopProof('POST', '/login'), null);
  await sessiond.signIn(server.pair(1));
  await sessiond.refresh();
  assert.deepEqual(await sessiond.json('/v1/things'), { ok: 2 });
  assert.deepEqual(server.calls, ['POST /v1/sessions/refresh -', 'GET /v1/things Bearer']);
  assert.equal(server.jkt, null);
  sessiond.close();
});

test('a refresh with dpop binds the session, and the bound tokens go with proofs that hash them', async () => {
  const server = dpopServer({ requireNonce: false });
  const key = new DpopKey();
  const sessiond = dpopClient(server, key);
  assert.equal(await sessiond.dpopThumbprint(), await key.thumbprint());
  await sessiond.signIn(server.pair(1));
  // Unbound still: the first token goes as Bearer.
  assert.deepEqual(await sessiond.json('/v1/things'), { ok: 1 });
  await sessiond.refresh();
  assert.equal(server.jkt, await key.thumbprint(), 'bound to the client key');
  assert.deepEqual(await sessiond.json('/v1/things', { method: 'POST', json: { a: 1 } }), { ok: 2 });
  await sessiond.refresh();
  assert.deepEqual(await sessiond.json('/v1/things'), { ok: 3 });
  assert.deepEqual(server.calls, [
    'GET /v1/things Bearer',
    'POST /v1/sessions/refresh - +proof',
    'POST /v1/things DPoP +proof',
    'POST /v1/sessions/refresh - +proof',
    'GET /v1/things DPoP +proof',
  ]);
  assert.equal(new Set(server.proofs.map((proof) => proof.jti)).size, 4, 'no proof is sent twice');
  sessiond.close();
});

test('asked for a nonce, the refresh and the request are each sent again once with it, and later ones use the latest', async () => {
  const server = dpopServer();
  const sessiond = dpopClient(server);
  await sessiond.signIn(server.pair(1));
  await sessiond.refresh();
  assert.deepEqual(server.calls.splice(0), ['POST /v1/sessions/refresh - +proof', 'POST /v1/sessions/refresh - +proof']);
  assert.equal(server.proofs[0].nonce, 'nonce-1', 'the nonce of the 400 answer');
  // The refresh answer carried nonce-2: the request uses it at once.
  assert.deepEqual(await sessiond.json('/v1/things'), { ok: 2 });
  assert.deepEqual(server.calls.splice(0), ['GET /v1/things DPoP +proof']);
  // The server moves on (another instance, a new period): one 401 with the nonce, then success.
  server.nonce = 'rotated';
  assert.deepEqual(await sessiond.json('/v1/things'), { ok: 2 });
  assert.deepEqual(server.calls.splice(0), ['GET /v1/things DPoP +proof', 'GET /v1/things DPoP +proof']);
  assert.equal(server.proofs.at(-1).nonce, 'nonce-3');
  assert.equal(sessiond.metrics().refreshes, 1, 'a nonce is not a reason to refresh');
  sessiond.close();
});

test('a server that asks for a nonce again and again gets one retry, not a loop', async () => {
  const server = dpopServer();
  const sessiond = dpopClient(server);
  await sessiond.signIn(server.pair(1));
  await sessiond.refresh();
  server.calls.length = 0;
  const inner = server.fetch;
  server.fetch = async (input, init) => {
    server.nonce = `moving-${Math.random()}`;
    return inner(input, init);
  };
  // Each request is asked once more with a nonce; the second 401 makes the client refresh,
  // which is asked twice too, and fails: the error is handed back, the session kept.
  await assert.rejects(sessiond.fetch('/v1/things'), (error) => error.status === 400 && error.error === 'use_dpop_nonce');
  assert.deepEqual(server.calls, [
    'GET /v1/things DPoP +proof',
    'GET /v1/things DPoP +proof',
    'POST /v1/sessions/refresh - +proof',
    'POST /v1/sessions/refresh - +proof',
  ]);
  assert.notEqual(sessiond.tokens(), null, 'still signed in');
  sessiond.close();
});

test('a bound session created with the thumbprint sends proofs from its first request', async () => {
  const server = dpopServer({ requireNonce: false });
  const key = new DpopKey();
  server.jkt = await key.thumbprint(); // what the backend passes as dpop_jkt at login
  const sessiond = dpopClient(server, key);
  const created = server.pair(1);
  assert.equal(created.token_type, 'DPoP');
  await sessiond.signIn(created);
  assert.deepEqual(await sessiond.json('/v1/things'), { ok: 1 });
  assert.deepEqual(server.calls, ['GET /v1/things DPoP +proof']);
  sessiond.close();
});

test('a client with another key cannot refresh a bound session', async () => {
  const server = dpopServer({ requireNonce: false });
  server.jkt = await new DpopKey().thumbprint();
  const sessiond = dpopClient(server);
  await sessiond.signIn(server.pair(1));
  await assert.rejects(sessiond.refresh(), (error) => error.status === 400 && error.error === 'invalid_dpop_proof');
  sessiond.close();
});

test('with a clock two minutes off, proofs refused as stale are dated again by the server clock', async () => {
  // Dated by this machine's clock, every proof would be stale to the server.
  const server = dpopServer({ requireNonce: false, aheadMs: 120_000 });
  const sessiond = dpopClient(server);
  await sessiond.signIn(server.pair(1));
  await sessiond.refresh();
  // Refused once for its date, then sent again dated by the server clock of the login pair.
  assert.deepEqual(server.calls.splice(0), ['POST /v1/sessions/refresh - +proof', 'refused: stale', 'POST /v1/sessions/refresh - +proof']);
  await sessiond.refresh();
  assert.deepEqual(await sessiond.json('/v1/things'), { ok: 3 });
  assert.deepEqual(server.calls, ['POST /v1/sessions/refresh - +proof', 'GET /v1/things DPoP +proof'], 'no more refusals');
  const serverSeconds = (Date.now() + 120_000) / 1000;
  assert.ok(server.proofs.every((proof) => Math.abs(proof.iat - serverSeconds) <= 2), JSON.stringify(server.proofs));
  sessiond.close();
});

test('a proof refused for its date is not sent again without a reading of the server clock', async () => {
  const server = dpopServer({ requireNonce: false, aheadMs: 120_000 });
  const sessiond = dpopClient(server);
  // A pair from elsewhere than signIn (a store): no hint of the server's clock.
  await sessiond.signIn({ ...server.pair(1), access_token: 'opaque' });
  await assert.rejects(sessiond.refresh(), (error) => error.error === 'invalid_dpop_proof');
  assert.deepEqual(server.calls, ['POST /v1/sessions/refresh - +proof', 'refused: stale']);
  sessiond.close();
});

test('in cookie mode a refused proof does not sign out: the cookie was not spent', async () => {
  const server = dpopServer({ requireNonce: false });
  server.jkt = await new DpopKey().thumbprint();
  const sessiond = new SessiondClient({
    baseUrl: BASE, mode: 'cookie', events: false, dpop: new DpopKey(), fetch: (input, init) => server.fetch(input, init),
  });
  const outs = [];
  sessiond.on('signedOut', (out) => outs.push(out.reason));
  await assert.rejects(sessiond.signIn(server.pair(1)), (error) => error.error === 'invalid_dpop_proof');
  assert.deepEqual(outs, []);
  sessiond.close();
});

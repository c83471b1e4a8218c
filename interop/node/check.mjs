// Interop check: stock Node libraries against sessiond, unchanged. jose verifies access tokens
// against the published JWK Set (createRemoteJWKSet + jwtVerify); openid-client 6, configured
// by RFC 8414 discovery, refreshes (with and without a narrower scope), introspects as a
// resource server with client_secret_basic and with client_secret_post, and revokes. With a
// DPoP handle (RFC 9449; openid-client's own proofs, by oauth4webapi), it binds a session at
// its refresh and uses the bound access token, once against a server that requires no nonce
// and once against one that does (SESSIOND_DPOP_NONCE=required), where it must follow
// sessiond's use_dpop_nonce answers.
//
// Usage: node check.mjs path/to/sessiond
//
// Starts the binary on a free loopback port with a temporary database (the issuer set to its
// address, so the metadata points at it; no reuse grace window, so a spent refresh token is
// reuse at once; one introspection client whose id and secret hold characters that
// client_secret_basic must form-urlencode). Prints `ok`/`FAIL` per check, then a closing line
// `interop: N passed, M failed`, and exits non-zero on any failure.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import * as client from "openid-client";
import { calculateJwkThumbprint, createRemoteJWKSet, decodeJwt, exportJWK, jwtVerify } from "jose";

const ADMIN_KEY = "interop-admin-key-0123456789-abcdefghijklmnop";
const AUDIENCE = "interop-api";
const PUBLIC_CLIENT = "interop-client";
// `+`, `/`, `=`, `%`, `:` and a space: client_secret_basic must form-urlencode them
// (RFC 6749 §2.3.1), and sessiond must decode them.
const RESOURCE_SERVER = "notes-api";
const RESOURCE_SECRET = "rs+secret/with=odd%20chars: 0123456789abcdef";
const PERMISSIONS = ["notes:read", "notes:write"];

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function start(binary, workdir, extraEnv = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const child = spawn(binary, ["serve"], {
    env: {
      PATH: process.env.PATH ?? "",
      RUST_LOG: "warn",
      SESSIOND_LISTEN: `127.0.0.1:${port}`,
      SESSIOND_DATABASE_URL: `sqlite://${join(workdir, `sessiond-node-${port}.db`)}`,
      SESSIOND_ADMIN_KEYS: ADMIN_KEY,
      SESSIOND_ISSUER: base,
      SESSIOND_AUDIENCE: AUDIENCE,
      SESSIOND_REUSE_GRACE: "0",
      SESSIOND_INTROSPECTION_CLIENTS: `${RESOURCE_SERVER}:${RESOURCE_SECRET}`,
      ...extraEnv,
    },
    stdio: ["ignore", "pipe", "ignore"],
  });
  const lines = createInterface({ input: child.stdout });
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("sessiond did not start")), 30_000);
    lines.on("line", (line) => {
      if (line.startsWith("sessiond listening on ")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sessiond exited with ${code}`));
    });
  });
  try {
    await started;
  } catch (error) {
    child.kill();
    throw error;
  }
  return { child, base };
}

function assert(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

async function newSession(base) {
  const answer = await fetch(`${base}/v1/sessions`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ user_id: "interop-user", claims: { permissions: PERMISSIONS } }),
  });
  assert(answer.status === 201, `creating a session answered ${answer.status}`);
  return answer.json();
}

// A client configured from the issuer alone, as openid-client's documentation recommends;
// plain http is allowed for this loopback server only.
function discover(base, clientId, secret, auth) {
  return client.discovery(new URL(base), clientId, secret, auth, {
    algorithm: "oauth2",
    execute: [client.allowInsecureRequests],
  });
}

// Waits for `promise` to fail with the RFC 6749 error `code`. A 401 with a
// `WWW-Authenticate` challenge is reported by openid-client as a challenge error, whose
// body is then read for the code; `scheme` is the challenge expected.
async function expectOAuthError(promise, code, scheme) {
  try {
    await promise;
  } catch (error) {
    if (error.code === "OAUTH_WWW_AUTHENTICATE_CHALLENGE") {
      const schemes = error.cause.map((challenge) => challenge.scheme);
      assert(schemes.includes(scheme), `challenged with ${schemes}, expected ${scheme}`);
      const body = await error.response.json();
      assert(body.error === code, `expected ${code}, got ${JSON.stringify(body)}`);
      return;
    }
    assert(error.error === code, `expected ${code}, got ${error.error ?? error}`);
    return;
  }
  throw new Error(`expected ${code}, got a success`);
}

async function joseVerifiesAccessTokens(base) {
  const document = await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json();
  const keys = createRemoteJWKSet(new URL(document.jwks_uri));
  const created = await newSession(base);
  const { payload, protectedHeader } = await jwtVerify(created.access_token, keys, {
    issuer: base,
    audience: AUDIENCE,
    typ: "at+jwt",
    requiredClaims: ["exp", "iat", "jti", "sub", "client_id"],
  });
  assert(protectedHeader.alg === "EdDSA", `alg ${protectedHeader.alg}`);
  assert(payload.sub === "interop-user", `sub ${payload.sub}`);
  assert(payload.sid === created.session.id, `sid ${payload.sid}`);
  assert(payload.scope === PERMISSIONS.join(" "), `scope ${payload.scope}`);
  // A token for another audience is refused.
  await jwtVerify(created.access_token, keys, { audience: "another-api" }).then(
    () => {
      throw new Error("a token for another audience was accepted");
    },
    (error) => assert(error.code === "ERR_JWT_CLAIM_VALIDATION_FAILED", String(error)),
  );
}

async function openidClientRefreshes(base) {
  const config = await discover(base, PUBLIC_CLIENT, undefined, client.None());
  const created = await newSession(base);

  const tokens = await client.refreshTokenGrant(config, created.refresh_token);
  assert(tokens.token_type === "bearer", `token_type ${tokens.token_type}`);
  assert(tokens.refresh_token !== created.refresh_token, "the refresh token rotates");
  assert(tokens.expiresIn() > 0, `expires in ${tokens.expiresIn()}`);
  assert(tokens.scope === PERMISSIONS.join(" "), `scope ${tokens.scope}`);

  // A narrower scope (RFC 6749 §6), then one beyond the session: invalid_scope, and the
  // token presented is not spent.
  const narrowed = await client.refreshTokenGrant(config, tokens.refresh_token, {
    scope: "notes:read",
  });
  assert(narrowed.scope === "notes:read", `narrowed scope ${narrowed.scope}`);
  await expectOAuthError(
    client.refreshTokenGrant(config, narrowed.refresh_token, { scope: "billing:read" }),
    "invalid_scope",
  );
  const after = await client.refreshTokenGrant(config, narrowed.refresh_token);
  assert(after.scope === PERMISSIONS.join(" "), `scope after ${after.scope}`);

  // The spent token again: reuse, refused as invalid_grant.
  await expectOAuthError(client.refreshTokenGrant(config, created.refresh_token), "invalid_grant");
}

async function openidClientIntrospects(base) {
  const created = await newSession(base);
  for (const [name, auth] of [
    ["client_secret_basic", client.ClientSecretBasic()],
    ["client_secret_post", client.ClientSecretPost()],
  ]) {
    const config = await discover(base, RESOURCE_SERVER, RESOURCE_SECRET, auth);
    const methods = config.serverMetadata().introspection_endpoint_auth_methods_supported;
    assert(methods.includes(name), `metadata lists ${methods}`);
    const access = await client.tokenIntrospection(config, created.access_token);
    assert(access.active === true, `${name}: ${JSON.stringify(access)}`);
    assert(access.sub === "interop-user", `${name}: sub ${access.sub}`);
    assert(access.scope === PERMISSIONS.join(" "), `${name}: scope ${access.scope}`);
    const refresh = await client.tokenIntrospection(config, created.refresh_token);
    assert(refresh.active === true && refresh.token_type === "refresh_token", `${name}`);
    const garbage = await client.tokenIntrospection(config, "garbage");
    assert(garbage.active === false, `${name}: ${JSON.stringify(garbage)}`);

    const wrong = await discover(base, RESOURCE_SERVER, `${RESOURCE_SECRET}x`, auth);
    await expectOAuthError(
      client.tokenIntrospection(wrong, created.access_token),
      "invalid_client",
      "basic",
    );
  }
}

async function openidClientRevokes(base) {
  const config = await discover(base, PUBLIC_CLIENT, undefined, client.None());
  const created = await newSession(base);
  await client.tokenRevocation(config, created.refresh_token, {
    token_type_hint: "refresh_token",
  });
  await expectOAuthError(client.refreshTokenGrant(config, created.refresh_token), "invalid_grant");
  const current = await fetch(`${base}/v1/sessions/current`, {
    headers: { authorization: `Bearer ${created.access_token}` },
  });
  assert(current.status === 401, `the revoked session's access token answered ${current.status}`);
}

// openid-client with a DPoP handle: the refresh grant binds an unbound session to the handle's
// key, the bound session then refreshes only with a proof of that key, and its access token
// (cnf.jkt, token_type DPoP) is accepted with a proof and refused as a bearer token.
async function openidClientBindsWithDpop(base) {
  const config = await discover(base, PUBLIC_CLIENT, undefined, client.None());
  const keyPair = await client.randomDPoPKeyPair("ES256");
  const DPoP = client.getDPoPHandle(config, keyPair);
  const jkt = await calculateJwkThumbprint(await exportJWK(keyPair.publicKey));
  const created = await newSession(base);
  assert(created.token_type === "Bearer", `created token_type ${created.token_type}`);

  const bound = await client.refreshTokenGrant(config, created.refresh_token, undefined, { DPoP });
  assert(bound.token_type === "dpop", `token_type ${bound.token_type}`);
  const claims = decodeJwt(bound.access_token);
  assert(claims.cnf?.jkt === jkt, `cnf ${JSON.stringify(claims.cnf)}, expected ${jkt}`);

  // Without a proof, or with another key's: invalid_dpop_proof with a DPoP challenge, and
  // nothing is spent.
  await expectOAuthError(client.refreshTokenGrant(config, bound.refresh_token), "invalid_dpop_proof", "dpop");
  const stranger = client.getDPoPHandle(config, await client.randomDPoPKeyPair("ES256"));
  await expectOAuthError(
    client.refreshTokenGrant(config, bound.refresh_token, undefined, { DPoP: stranger }),
    "invalid_dpop_proof",
    "dpop",
  );
  const again = await client.refreshTokenGrant(config, bound.refresh_token, undefined, { DPoP });
  assert(again.token_type === "dpop", `token_type after ${again.token_type}`);
  assert(decodeJwt(again.access_token).cnf?.jkt === jkt, "still bound to the same key");

  // The bound access token: accepted with the DPoP scheme and a proof, refused as Bearer.
  const current = new URL(`${base}/v1/sessions/current`);
  const answer = await client.fetchProtectedResource(config, again.access_token, current, "GET", undefined, undefined, { DPoP });
  const session = await answer.json();
  assert(answer.status === 200, `DPoP request answered ${answer.status}: ${JSON.stringify(session)}`);
  assert(session.id === created.session.id, `session ${session.id}`);
  const bearer = await fetch(current, { headers: { authorization: `Bearer ${again.access_token}` } });
  assert(bearer.status === 401, `the bound token as Bearer answered ${bearer.status}`);
  const challenge = bearer.headers.get("www-authenticate") ?? "";
  assert(/^DPoP\b/i.test(challenge), `challenge ${challenge}`);
}

async function main() {
  const binary = process.argv[2];
  assert(binary, "usage: node check.mjs path/to/sessiond");
  const workdir = mkdtempSync(join(tmpdir(), "sessiond-node-"));
  let passed = 0;
  let failed = 0;
  const servers = [
    {
      env: {},
      checks: [
        joseVerifiesAccessTokens,
        openidClientRefreshes,
        openidClientIntrospects,
        openidClientRevokes,
        openidClientBindsWithDpop,
      ],
    },
    { env: { SESSIOND_DPOP_NONCE: "required" }, checks: [openidClientBindsWithDpop], label: " (nonce required)" },
  ];
  try {
    for (const { env, checks, label = "" } of servers) {
      const { child, base } = await start(binary, workdir, env);
      try {
        for (const check of checks) {
          try {
            await check(base);
            passed += 1;
            console.log(`ok   ${check.name}${label}`);
          } catch (error) {
            failed += 1;
            console.log(`FAIL ${check.name}${label}: ${error?.stack ?? error}`);
          }
        }
      } finally {
        child.kill();
      }
    }
  } finally {
    rmSync(workdir, { recursive: true, force: true });
  }
  console.log(`interop: ${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

await main();

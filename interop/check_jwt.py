#!/usr/bin/env python3
"""Interop check: a stock JOSE library (PyJWT with PyJWKClient) verifies sessiond's tokens.

For every signing algorithm (EdDSA, ES256, RS256, HS256) it starts the `sessiond` binary given
as the first argument on a free loopback port with a temporary database, creates a session
through the admin API, and verifies the access token (signature, alg, typ, iss, aud, exp) with
PyJWT; then refreshes and verifies the successor. Asymmetric tokens are verified against the
published JWK Set through PyJWKClient. HS256 keys are never published, so the HS256 token is
verified with the shared secret that `sessiond keys secret KID` prints, as the single trusted
verifier HS256 is meant for would be given it (the database holds it encrypted). Prints a closing line `interop: N passed, M failed` and exits
non-zero on any failure.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import jwt

ADMIN_KEY = "interop-admin-key-0123456789-abcdefghijklmnop"
ISSUER = "http://sessiond.interop"
AUDIENCE = "interop-api"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(base, method, path, body=None, bearer=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if bearer:
        req.add_header("authorization", "Bearer " + bearer)
    with urllib.request.urlopen(req, timeout=10) as answer:
        return answer.status, json.loads(answer.read() or b"null")


# The binary and environment of the server being checked, for `sessiond keys secret`.
CONTEXT = {}


def start(binary, workdir, algorithm):
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "warn",
        "SESSIOND_LISTEN": f"127.0.0.1:{port}",
        "SESSIOND_DATABASE_URL": f"sqlite://{workdir}/sessiond-{algorithm}.db",
        "SESSIOND_ADMIN_KEYS": ADMIN_KEY,
        "SESSIOND_ISSUER": ISSUER,
        "SESSIOND_AUDIENCE": AUDIENCE,
        "SESSIOND_SIGNING_ALG": algorithm,
    }
    CONTEXT.update(binary=binary, env=env)
    process = subprocess.Popen(
        [binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("sessiond listening on "):
            return process, line.split()[-1]
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("sessiond did not start")


ALGORITHMS = ("EdDSA", "ES256", "RS256", "HS256")
# The members a published key may have, by key type: public parts only.
PUBLIC_MEMBERS = {
    "OKP": {"kty", "crv", "x", "kid", "alg", "use"},
    "EC": {"kty", "crv", "x", "y", "kid", "alg", "use"},
    "RSA": {"kty", "n", "e", "kid", "alg", "use"},
}


def hmac_secret(kid):
    printed = subprocess.run(
        [CONTEXT["binary"], "keys", "secret", kid],
        env=CONTEXT["env"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    return base64.urlsafe_b64decode(printed + "=" * (-len(printed) % 4))


def check_tokens(base, algorithm, database):
    status, created = request(
        base,
        "POST",
        "/v1/sessions",
        {"user_id": "interop-user", "claims": {"roles": ["reader"]}},
        ADMIN_KEY,
    )
    assert status == 201, status
    token = created["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt", header
    assert header["alg"] == algorithm, header
    if algorithm == "HS256":
        _, jwks = request(base, "GET", "/.well-known/jwks.json")
        assert header["kid"] not in {key["kid"] for key in jwks["keys"]}, jwks
        secret = hmac_secret(header["kid"])

        def key_for(_token):
            return secret

    else:
        client = jwt.PyJWKClient(base + "/.well-known/jwks.json")

        def key_for(token):
            signing_key = client.get_signing_key_from_jwt(token)
            assert signing_key.key_id == jwt.get_unverified_header(token)["kid"]
            return signing_key.key

    key = key_for(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=[algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    assert claims["sub"] == "interop-user", claims
    assert claims["sid"] == created["session"]["id"], claims
    assert claims["roles"] == ["reader"], claims

    status, refreshed = request(
        base, "POST", "/v1/sessions/refresh", {"refresh_token": created["refresh_token"]}
    )
    assert status == 200, status
    successor = jwt.decode(
        refreshed["access_token"],
        key_for(refreshed["access_token"]),
        algorithms=[algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    assert successor["sid"] == claims["sid"]
    assert successor["jti"] != claims["jti"]

    # A library must refuse the token under any other algorithm.
    for other in ALGORITHMS:
        if other == algorithm:
            continue
        try:
            jwt.decode(token, key, algorithms=[other], audience=AUDIENCE, issuer=ISSUER)
        except (jwt.exceptions.InvalidTokenError, TypeError, ValueError):
            pass
        else:
            raise AssertionError(f"{algorithm} token accepted under {other}")


def check_jwks_has_no_private_parts(base, algorithm, _database):
    _, jwks = request(base, "GET", "/.well-known/jwks.json")
    if algorithm == "HS256":
        assert jwks["keys"] == [], jwks
        return
    assert jwks["keys"], jwks
    for key in jwks["keys"]:
        assert set(key) == PUBLIC_MEMBERS[key["kty"]], key
        assert key["alg"] == algorithm, key
        assert key["use"] == "sig", key


def main():
    binary = sys.argv[1]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as workdir:
        for algorithm in ALGORITHMS:
            database = f"{workdir}/sessiond-{algorithm}.db"
            process, base = start(binary, workdir, algorithm)
            try:
                for check in (check_tokens, check_jwks_has_no_private_parts):
                    name = f"{check.__name__}[{algorithm}]"
                    try:
                        check(base, algorithm, database)
                        passed += 1
                        print(f"ok   {name}")
                    except Exception as error:  # noqa: BLE001 - report every failure the same way
                        failed += 1
                        print(f"FAIL {name}: {error!r}")
            finally:
                process.terminate()
                process.wait(timeout=10)
    print(f"interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

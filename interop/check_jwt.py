#!/usr/bin/env python3
"""Interop check: a stock JOSE library (PyJWT with PyJWKClient) verifies sessiond's tokens.

Starts the `sessiond` binary given as the first argument on a free loopback port with a
temporary database, creates a session through the admin API, fetches the JWK Set, and verifies
the access token (signature, alg, typ, iss, aud, exp) with PyJWT; then refreshes and verifies
the successor. Prints a closing line `interop: N passed, M failed` and exits non-zero on any
failure.
"""

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


def check_eddsa(base):
    status, created = request(
        base,
        "POST",
        "/v1/sessions",
        {"user_id": "interop-user", "claims": {"roles": ["reader"]}},
        ADMIN_KEY,
    )
    assert status == 201, status
    client = jwt.PyJWKClient(base + "/.well-known/jwks.json")
    token = created["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt", header
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
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
        client.get_signing_key_from_jwt(refreshed["access_token"]).key,
        algorithms=["EdDSA"],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    assert successor["sid"] == claims["sid"]
    assert successor["jti"] != claims["jti"]

    # A library must refuse the token under any other algorithm.
    try:
        jwt.decode(token, key.key, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    except jwt.exceptions.InvalidTokenError:
        pass
    else:
        raise AssertionError("token accepted under HS256")


def check_jwks_has_no_private_parts(base):
    _, jwks = request(base, "GET", "/.well-known/jwks.json")
    assert jwks["keys"], jwks
    for key in jwks["keys"]:
        assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}, key


def main():
    binary = sys.argv[1]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as workdir:
        process, base = start(binary, workdir, "EdDSA")
        try:
            for check in (check_eddsa, check_jwks_has_no_private_parts):
                try:
                    check(base)
                    passed += 1
                    print(f"ok   {check.__name__}")
                except Exception as error:  # noqa: BLE001 - report every failure the same way
                    failed += 1
                    print(f"FAIL {check.__name__}: {error!r}")
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(f"interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

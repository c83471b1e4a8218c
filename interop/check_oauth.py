#!/usr/bin/env python3
"""Interop check: a stock OAuth 2.0 client (Authlib's requests OAuth2Session) refreshes against
sessiond unchanged.

Starts the `sessiond` binary given as the first argument on a free loopback port with a
temporary database (the issuer set to that address, so the RFC 8414 metadata points at it, and
no reuse grace window, so a replayed refresh token is reuse at once), creates a session through
the admin API, discovers the token endpoint from `/.well-known/oauth-authorization-server`, and
has the client refresh explicitly and on its own when its token has expired; then checks that a
reused refresh token is refused as `invalid_grant`, that a resource server's client introspects
with `client_secret_basic` (the method the metadata advertises first), and that the client's
revocation ends the session. Prints a closing line `interop: N passed, M failed` and exits non-zero on any failure.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError

ADMIN_KEY = "interop-admin-key-0123456789-abcdefghijklmnop"
CLIENT_ID = "interop-client"
# A resource server's introspection credentials. Authlib sends client_secret_basic without the
# form-urlencoding of RFC 6749 §2.3.1, so the characters that encoding would change (`+`, `/`,
# `=`, `:`) check that sessiond also takes a secret as written.
RESOURCE_SERVER = "notes-api"
RESOURCE_SECRET = "rs+secret/with=odd:chars-0123456789abcdef"


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


def start(binary, workdir):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "warn",
        "SESSIOND_LISTEN": f"127.0.0.1:{port}",
        "SESSIOND_DATABASE_URL": f"sqlite://{workdir}/sessiond-oauth.db",
        "SESSIOND_ADMIN_KEYS": ADMIN_KEY,
        "SESSIOND_ISSUER": base,
        "SESSIOND_REUSE_GRACE": "0",
        "SESSIOND_INTROSPECTION_CLIENTS": f"{RESOURCE_SERVER}:{RESOURCE_SECRET}",
    }
    process = subprocess.Popen(
        [binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("sessiond listening on "):
            return process, base
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("sessiond did not start")


def metadata(base):
    status, document = request(base, "GET", "/.well-known/oauth-authorization-server")
    assert status == 200, status
    assert document["issuer"] == base, document
    assert "refresh_token" in document["grant_types_supported"], document
    assert "none" in document["token_endpoint_auth_methods_supported"], document
    return document


def new_session(base):
    status, created = request(
        base, "POST", "/v1/sessions", {"user_id": "interop-user"}, ADMIN_KEY
    )
    assert status == 201, status
    return created


def client_token(pair, expires_at=None):
    token = {
        "access_token": pair["access_token"],
        "token_type": pair["token_type"],
        "refresh_token": pair["refresh_token"],
        "expires_in": pair["expires_in"],
    }
    if expires_at is not None:
        token["expires_at"] = expires_at
    return token


def check_explicit_refresh(base):
    endpoint = metadata(base)["token_endpoint"]
    created = new_session(base)
    client = OAuth2Session(
        client_id=CLIENT_ID, token=client_token(created), token_endpoint_auth_method="none"
    )
    token = client.refresh_token(endpoint, refresh_token=created["refresh_token"])
    assert token["token_type"] == "Bearer", token
    assert token["refresh_token"] != created["refresh_token"], "the refresh token rotates"
    assert token["access_token"] != created["access_token"], token
    assert token["expires_in"] == created["expires_in"], token
    # The session keeps working with what the library now holds.
    answer = client.get(base + "/v1/sessions/current", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == created["session"]["id"], answer.text

    # The spent token again: reuse, refused in RFC 6749 format, and the session is over.
    try:
        client.refresh_token(endpoint, refresh_token=created["refresh_token"])
    except OAuthError as error:
        assert error.error == "invalid_grant", error
    else:
        raise AssertionError("a spent refresh token was accepted")
    answer = client.get(base + "/v1/sessions/current", timeout=10)
    assert answer.status_code == 401, answer.text


def check_automatic_refresh(base):
    endpoint = metadata(base)["token_endpoint"]
    created = new_session(base)
    saved = []
    client = OAuth2Session(
        client_id=CLIENT_ID,
        # Marked expired, so the library refreshes before its first request.
        token=client_token(created, expires_at=int(time.time()) - 60),
        token_endpoint=endpoint,
        token_endpoint_auth_method="none",
        update_token=lambda token, refresh_token=None, access_token=None: saved.append(token),
    )
    answer = client.get(base + "/v1/sessions/current", timeout=10)
    assert answer.status_code == 200, answer.text
    assert len(saved) == 1, saved
    assert saved[0]["refresh_token"] != created["refresh_token"], saved


def check_introspection(base):
    document = metadata(base)
    assert "client_secret_basic" in document["introspection_endpoint_auth_methods_supported"], (
        document
    )
    created = new_session(base)
    resource_server = OAuth2Session(
        client_id=RESOURCE_SERVER,
        client_secret=RESOURCE_SECRET,
        revocation_endpoint_auth_method="client_secret_basic",
    )
    answer = resource_server.introspect_token(
        document["introspection_endpoint"],
        token=created["access_token"],
        token_type_hint="access_token",
    )
    assert answer.status_code == 200, answer.text
    claims = answer.json()
    assert claims["active"] is True, claims
    assert claims["sub"] == "interop-user", claims
    assert claims["sid"] == created["session"]["id"], claims

    answer = resource_server.introspect_token(
        document["introspection_endpoint"], token=created["refresh_token"]
    )
    assert answer.json()["token_type"] == "refresh_token", answer.text

    wrong = OAuth2Session(
        client_id=RESOURCE_SERVER,
        client_secret=RESOURCE_SECRET + "x",
        revocation_endpoint_auth_method="client_secret_basic",
    )
    answer = wrong.introspect_token(
        document["introspection_endpoint"], token=created["access_token"]
    )
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client", answer.text
    assert answer.headers["www-authenticate"].startswith("Basic "), answer.headers


def check_revocation(base):
    document = metadata(base)
    created = new_session(base)
    client = OAuth2Session(
        client_id=CLIENT_ID, token=client_token(created), token_endpoint_auth_method="none"
    )
    answer = client.revoke_token(
        document["revocation_endpoint"],
        token=created["refresh_token"],
        token_type_hint="refresh_token",
    )
    assert answer.status_code == 200, answer.text
    try:
        client.refresh_token(document["token_endpoint"], refresh_token=created["refresh_token"])
    except OAuthError as error:
        assert error.error == "invalid_grant", error
    else:
        raise AssertionError("a revoked session's refresh token was accepted")


def main():
    binary = sys.argv[1]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as workdir:
        process, base = start(binary, workdir)
        try:
            for check in (
                check_explicit_refresh,
                check_automatic_refresh,
                check_introspection,
                check_revocation,
            ):
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

#!/usr/bin/env python3
"""Mints DPoP-bound credentials and one DPoP proof per request for dpop.lua, on a running sessiond.

Each output line is `CREDENTIAL<TAB>PROOF`, spent exactly once by wrk:

- `refresh`: COUNT sessions, each bound to a P-256 key of its own (`dpop_jkt`), and for each its
  refresh token with a proof for POST ISSUER/v1/sessions/refresh;
- `current`: one bound session, and COUNT proofs for GET ISSUER/v1/sessions/current carrying
  its access token's `ath`, each line the access token and one proof.

Proofs are signed now, so the server must accept them for the whole run: start it with
SESSIOND_DPOP_PROOF_MAX_AGE=10m. Needs the `cryptography` package.

    mint_dpop.py URL ADMIN_KEY ISSUER refresh|current COUNT OUT_FILE
"""

import base64
import hashlib
import http.client
import json
import secrets
import sys
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

WORKERS = 8


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Key:
    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP256R1())
        numbers = self.private.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64(numbers.x.to_bytes(32, "big")),
            "y": b64(numbers.y.to_bytes(32, "big")),
        }
        canonical = json.dumps(
            {"crv": "P-256", "kty": "EC", "x": self.jwk["x"], "y": self.jwk["y"]},
            separators=(",", ":"),
        )
        self.thumbprint = b64(hashlib.sha256(canonical.encode()).digest())
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}
        self.header = b64(json.dumps(header, separators=(",", ":")).encode())

    def proof(self, method, url, access_token=None, iat=None):
        iat = int(time.time()) if iat is None else iat
        claims = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url, "iat": iat}
        if access_token is not None:
            claims["ath"] = b64(hashlib.sha256(access_token.encode()).digest())
        signing_input = self.header + "." + b64(json.dumps(claims, separators=(",", ":")).encode())
        der = self.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def create(connection, admin_key, user, key):
    body = json.dumps({"user_id": user, "device": {"name": "wrk"}, "dpop_jkt": key.thumbprint})
    connection.request(
        "POST",
        "/v1/sessions",
        body=body,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    answer = connection.getresponse()
    payload = answer.read()
    if answer.status != 201:
        raise SystemExit(f"session creation answered {answer.status}: {payload[:200]!r}")
    pair = json.loads(payload)
    if pair.get("token_type") != "DPoP":
        raise SystemExit(f"the session is not bound: {pair.get('token_type')}")
    return pair


def mint_refresh(url, admin_key, issuer, indices, out, lock):
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    lines = []
    for index in indices:
        key = Key()
        pair = create(connection, admin_key, f"wrk-dpop-user-{index}", key)
        proof = key.proof("POST", issuer + "/v1/sessions/refresh")
        lines.append(pair["refresh_token"] + "\t" + proof)
    with lock:
        out.extend(lines)


def mint_current(key, issuer, access_token, indices, out, lock):
    lines = []
    for _ in indices:
        iat = int(time.time())
        proof = key.proof("GET", issuer + "/v1/sessions/current", access_token, iat)
        lines.append((iat, access_token + "\t" + proof))
    with lock:
        out.extend(lines)


def main():
    url, admin_key, issuer, mode, count, path = sys.argv[1:7]
    count, issuer = int(count), issuer.rstrip("/")
    out, lock = [], threading.Lock()
    if mode == "refresh":
        target, shared = mint_refresh, (url, admin_key, issuer)
    elif mode == "current":
        parsed = urllib.parse.urlsplit(url)
        key = Key()
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        pair = create(connection, admin_key, "wrk-dpop-reader", key)
        target, shared = mint_current, (key, issuer, pair["access_token"])
    else:
        raise SystemExit("mode must be refresh or current")
    threads = [
        threading.Thread(target=target, args=(*shared, range(w, count, WORKERS), out, lock))
        for w in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(out) != count:
        raise SystemExit(f"minted {len(out)} of {count}")
    if mode == "current":
        # In the order they were signed: a full replay cache drops the ids expiring soonest and
        # then refuses any proof expiring no later, so proofs must arrive about as old as a
        # client's would, oldest first, not shuffled by the minting threads.
        out = [line for _, line in sorted(out, key=lambda pair: pair[0])]
    with open(path, "w", encoding="ascii") as file:
        file.write("\n".join(out) + "\n")
    print(f"minted {count} {mode} lines into {path}")


if __name__ == "__main__":
    main()

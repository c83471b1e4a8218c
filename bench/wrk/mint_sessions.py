#!/usr/bin/env python3
"""Creates N sessions on a running sessiond and writes their refresh tokens, one per line.

Used with refresh.lua so that wrk spends each refresh token exactly once, the way the peer
benchmarks do. Each session belongs to its own user, so the per-user limit never evicts one.

    mint_sessions.py URL ADMIN_KEY COUNT OUT_FILE
"""

import http.client
import json
import sys
import threading
import urllib.parse

WORKERS = 8


def mint(url, admin_key, indices, out, lock):
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    tokens = []
    for index in indices:
        body = json.dumps({"user_id": f"wrk-user-{index}", "device": {"name": "wrk"}})
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
        tokens.append(json.loads(payload)["refresh_token"])
    with lock:
        out.extend(tokens)


def main():
    url, admin_key, count, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    out, lock = [], threading.Lock()
    threads = [
        threading.Thread(target=mint, args=(url, admin_key, range(w, count, WORKERS), out, lock))
        for w in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(out) != count:
        raise SystemExit(f"minted {len(out)} of {count} sessions")
    with open(path, "w", encoding="ascii") as file:
        file.write("\n".join(out) + "\n")
    print(f"minted {count} sessions into {path}")


if __name__ == "__main__":
    main()

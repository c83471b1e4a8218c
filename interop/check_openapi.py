#!/usr/bin/env python3
"""Interop check: the OpenAPI document against the real binary, with a stock fuzzer.

Starts the `sessiond` binary given as the first argument on a free loopback port with a
temporary database and no rate limits, checks that `GET /openapi.json` serves
`crates/server/openapi.json` as it is, then has Schemathesis generate requests from the document
for a bounded time, once with an admin key and once with a user's access token (for the routes
a user calls). Every answer must be documented (status, content type, headers, body schema), no
input may cause a 5xx, undocumented methods must answer 405, and routes that need a credential
must refuse a request without one. `GET /v1/events` is left out: its answer is an endless
stream. Prints a closing line `openapi: N passed, M failed` and exits non-zero on any failure.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ADMIN_KEY = "openapi-admin-key-0123456789-abcdefghijklmnop"
DOCUMENT = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "crates", "server", "openapi.json")
)
# Checks of the server's answers only: whether the fuzzer's guesses about what the server
# accepts hold is not something the document promises (a well-formed but unknown refresh
# token is refused, as it should be).
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
    ]
)
SECONDS = os.environ.get("SESSIOND_OPENAPI_FUZZ_SECONDS", "60")
# CPython 3.11's AST recursion-depth bookkeeping can break after an error path
# (python/cpython#106905), and Hypothesis then fails inside the fuzzer, while describing a
# generator, not on an answer. A run that failed so, and found nothing wrong with an answer of
# the server (its summary counts no failure), is run once more.
TOOL_FAULT = "AST constructor recursion depth mismatch"
FINDING = "unique failure"


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
        return answer.status, answer.read()


def start(binary, workdir):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "warn",
        "SESSIOND_LISTEN": f"127.0.0.1:{port}",
        "SESSIOND_DATABASE_URL": f"sqlite://{workdir}/sessiond-openapi.db",
        "SESSIOND_ADMIN_KEYS": ADMIN_KEY,
        "SESSIOND_ISSUER": base,
        "SESSIOND_RATE_LIMITS": "off",
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


def fuzz(base, bearer, filters, label, workdir):
    schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    command = [
        schemathesis,
        "run",
        DOCUMENT,
        "--url",
        base,
        "--header",
        f"Authorization: Bearer {bearer}",
        "--checks",
        CHECKS,
        "--max-time",
        SECONDS,
        "--request-timeout",
        "10",
        "--workers",
        "2",
        "--no-color",
        "--exclude-operation-id",
        "events",
        # The DBSC routes exist only with SESSIOND_DBSC=on (and cookie mode); this server runs
        # the defaults, where they answer 404. tests/it/openapi.rs checks them against the
        # answers of a server that has them.
        "--exclude-operation-id",
        "registerDbscSession",
        "--exclude-operation-id",
        "refreshDbscSession",
        *filters,
    ]
    print(f"== schemathesis, {label}", flush=True)
    passed, output = run_echoed(command, workdir)
    if not passed and TOOL_FAULT in output and FINDING not in output:
        # A fault inside the fuzzer's own Python, not an answer of the server: run once more.
        print(f"== schemathesis, {label}, once more: it failed inside its own code", flush=True)
        passed, _ = run_echoed(command, workdir)
    return passed


def run_echoed(command, workdir):
    """Runs `command`, echoing its output as it comes; answers whether it passed, and the output."""
    # Its working directory takes the fuzzer's own files (.schemathesis/), not the checkout.
    with subprocess.Popen(
        command,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        lines = []
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        process.wait()
    return process.returncode == 0, "".join(lines)


def main():
    binary = sys.argv[1]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as workdir:
        process, base = start(binary, workdir)
        try:
            status, served = request(base, "GET", "/openapi.json")
            with open(DOCUMENT, "rb") as file:
                on_disk = file.read()
            if status == 200 and served == on_disk:
                passed += 1
            else:
                print(f"GET /openapi.json answered {status}, not the file", file=sys.stderr)
                failed += 1
            status, created = request(
                base, "POST", "/v1/sessions", {"user_id": "fuzz"}, bearer=ADMIN_KEY
            )
            access_token = json.loads(created)["access_token"]
            runs = [
                (ADMIN_KEY, [], "every route with an admin key"),
                (
                    access_token,
                    ["--include-tag", "sessions", "--include-tag", "devices"],
                    "a user's routes with an access token",
                ),
            ]
            for bearer, filters, label in runs:
                if fuzz(base, bearer, filters, label, workdir):
                    passed += 1
                else:
                    failed += 1
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(f"openapi: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

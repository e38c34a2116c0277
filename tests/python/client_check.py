#!/usr/bin/env python3
"""Checks a running wshub server with Python's `websockets` library: a client
nobody in this project wrote.

Usage: client_check.py <url>      e.g. ws://127.0.0.1:8080/ws

The server must accept the API keys `key-alice` (user alice) and `key-bob`
(user bob) as `Authorization: Bearer <key>` or `?token=<key>`.

Run by tests/python_clients.rs, which talks to it over stdout: one line per
step. After the line `READY` the Rust side publishes (in this order)
  - process_output "hello from rust" for process p1 (channel process:p1),
  - an event {"event": "headline", "data": {"n": 1}} on channel "news",
  - a message of type "alert" with data "disk full" on channel "alerts",
and waits for the script to exit. Exit status 0 and a last line `DONE` when
every check passed; otherwise a `FAIL ...` line and status 1.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

# Every single wait is bounded; the Rust side also kills the script after a while.
STEP = 5.0


def say(line):
    print(line, flush=True)


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def dial(url, **kw):
    # proxy=None: never route a loopback test through an HTTP(S)_PROXY from the environment.
    return connect(url, proxy=None, open_timeout=STEP, close_timeout=STEP, **kw)


async def recv_json(ws, who):
    try:
        async with asyncio.timeout(STEP):
            raw = await ws.recv()
    except TimeoutError:
        raise CheckFailed(f"{who}: nothing received within {STEP} s") from None
    check(isinstance(raw, str), f"{who}: expected a text frame, got {raw!r}")
    return json.loads(raw)


async def refused(url, status, **kw):
    try:
        async with dial(url, **kw):
            pass
    except InvalidStatus as e:
        got = e.response.status_code
        check(got == status, f"expected HTTP {status}, got {got}")
        check(
            "Sec-WebSocket-Accept" not in e.response.headers,
            "a refusal carries Sec-WebSocket-Accept",
        )
        check(b"wrong-key" not in (e.response.body or b""), "the refusal echoes the token")
        return
    raise CheckFailed(f"expected HTTP {status}, but the connection was upgraded")


async def main(url):
    # Bad credentials: refused before any upgrade.
    await refused(f"{url}?token=wrong-key", 401)
    await refused(url, 401, additional_headers={"Authorization": "Bearer wrong-key"})
    say("OK wrong token refused with 401 (query and bearer)")

    alice = await dial(f"{url}?token=key-alice")
    bob = await dial(url, additional_headers={"Authorization": "Bearer key-bob"})
    for who, ws in (("alice", alice), ("bob", bob)):
        # websockets offers permessage-deflate by default; the hub must not take it.
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        check(ext is None, f"{who}: an extension was negotiated: {ext}")
    say("OK connected: alice with ?token=, bob with an Authorization header")

    # Level 0: no reply. Level 1: ids (number and string) get exactly one reply.
    await alice.send(json.dumps({"type": "subscribe", "data": "process:p1"}))
    await bob.send(json.dumps({"type": "subscribe", "channel": "news", "id": 1}))
    ack = await recv_json(bob, "bob")
    check(ack.get("type") == "ack" and ack.get("id") == 1, f"bob: expected ack 1, got {ack}")
    await bob.send(json.dumps({"type": "subscribe", "channel": "alerts", "id": "sub-2"}))
    ack = await recv_json(bob, "bob")
    check(
        ack.get("type") == "ack" and ack.get("id") == "sub-2",
        f"bob: expected ack sub-2, got {ack}",
    )
    await bob.send(json.dumps({"type": "unsubscribe", "channel": "nowhere", "id": 3}))
    err = await recv_json(bob, "bob")
    check(
        err.get("type") == "error"
        and err.get("id") == 3
        and err.get("data", {}).get("code") == "not_subscribed",
        f"bob: expected error not_subscribed for id 3, got {err}",
    )
    say("READY")

    m = await recv_json(alice, "alice")
    check(
        m.get("type") == "process_output"
        and m.get("channel") == "process:p1"
        and m.get("processId") == "p1"
        and m.get("data") == "hello from rust"
        and isinstance(m.get("timestamp"), str),
        f"alice: expected the process output, got {m}",
    )
    m = await recv_json(bob, "bob")
    check(
        m.get("type") == "event" and m.get("data") == {"event": "headline", "data": {"n": 1}},
        f"bob: expected the news event, got {m}",
    )
    m = await recv_json(bob, "bob")
    check(
        m.get("type") == "alert" and m.get("data") == "disk full",
        f"bob: expected the alert, got {m}",
    )
    say("OK published messages received")

    # App-level ping; the pong is each one's next message, so alice got
    # nothing from bob's channels in between.
    for who, ws in (("alice", alice), ("bob", bob)):
        await ws.send(json.dumps({"type": "ping"}))
        pong = await recv_json(ws, who)
        check(
            pong.get("type") == "pong" and isinstance(pong.get("timestamp"), str),
            f"{who}: expected a pong, got {pong}",
        )
    say("OK ping answered with pong")

    # Clean close: 1000 both ways.
    await alice.close()
    await bob.close(code=1000, reason="bye")
    for who, ws in (("alice", alice), ("bob", bob)):
        check(ws.close_code == 1000, f"{who}: the server answered close with {ws.close_code}")
    say("OK closed with 1000")
    say("DONE")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <ws-url>")
    try:
        asyncio.run(main(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - report anything as a failed check
        say(f"FAIL {type(e).__name__}: {e}")
        sys.exit(1)

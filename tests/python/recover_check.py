#!/usr/bin/env python3
"""Resumes a subscription on a running `wshub serve` with Python's
`websockets` library: subscribe with positions, read two messages, drop the
connection, let four messages be published (through the HTTP API) while
away, reconnect with `recover` and check exactly those four come back, in
offset order, then one live message.

Usage: recover_check.py <ws-url-with-token> <http-base> <admin-key>

Run by tests/cli_history.rs. Prints `OK recovered 4 in order` and exits 0
when every check passed; otherwise a `FAIL ...` line and status 1.
"""

import json
import sys
import urllib.request

from websockets.sync.client import connect

STEP = 5.0
CHANNEL = "process:py"


def fail(what):
    print(f"FAIL {what}", flush=True)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)


def publish(base, key, data):
    body = json.dumps({"channel": CHANNEL, "data": data}).encode()
    req = urllib.request.Request(
        f"{base}/api/publish",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=STEP) as r:
        check(r.status == 200, f"publish answered {r.status}")


class Reader:
    """Messages one at a time (a frame may carry several, one per line)."""

    def __init__(self, ws):
        self.ws = ws
        self.pending = []

    def next(self):
        while not self.pending:
            frame = self.ws.recv(timeout=STEP)
            self.pending = [json.loads(l) for l in str(frame).split("\n") if l.strip()]
        return self.pending.pop(0)

    def subscribe(self, **extra):
        self.ws.send(json.dumps({"type": "subscribe", "channel": CHANNEL, "id": 7, **extra}))
        ack = self.next()
        check(ack.get("type") == "ack" and ack.get("id") == 7, f"no ack: {ack}")
        return ack["data"]


def main():
    url, base, key = sys.argv[1:4]
    with connect(url, open_timeout=STEP) as ws:
        r = Reader(ws)
        ack = r.subscribe(positions=True)
        check(ack["recovered"] is True and ack["epoch"], f"first ack: {ack}")
        epoch, offset = ack["epoch"], ack["offset"]
        for n in (1, 2):
            publish(base, key, n)
        for n in (1, 2):
            m = r.next()
            check(m["data"] == n and m["offset"] == offset + n, f"live {n}: {m}")
        last = offset + 2
    # The connection is closed: these wait in the hub's history.
    for n in (3, 4, 5, 6):
        publish(base, key, n)
    with connect(url, open_timeout=STEP) as ws:
        r = Reader(ws)
        ack = r.subscribe(recover={"offset": last, "epoch": epoch})
        want = {"recovered": True, "offset": last + 4, "epoch": epoch, "replayed": 4}
        check(ack == want, f"resume ack: {ack}, wanted {want}")
        got = [r.next() for _ in range(4)]
        check(
            [(m["offset"], m["data"]) for m in got] == [(last + i, 2 + i) for i in range(1, 5)],
            f"replayed: {got}",
        )
        publish(base, key, 7)
        m = r.next()
        check(m["data"] == 7 and m["offset"] == last + 5, f"live after the replay: {m}")
    print("OK recovered 4 in order", flush=True)


if __name__ == "__main__":
    main()

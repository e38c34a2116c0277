// Headless Chromium tests of the live page `wshub serve` serves at `/`.
//
// Run by `cargo test --test browser` (tests/browser.rs), which starts the
// server and passes, by environment:
//   WSHUB_TEST_URL        http://127.0.0.1:PORT of a running `wshub serve`
//   WSHUB_TEST_TOKEN      a client key the server accepts (--api-key)
//   WSHUB_TEST_ADMIN_KEY  the server's --admin-key
//   WSHUB_TEST_BIN        the wshub binary (for `wshub exec`)
//   WSHUB_CHROMIUM        optional, default /usr/bin/chromium (Debian's package)
// Prints one TAP-like line per scenario ("ok N - name" / "not ok N - name")
// and exits 0 only if all pass. Every wait is on a DOM condition with a
// timeout; nothing sleeps for a fixed time.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import assert from "node:assert/strict";

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`missing environment variable ${name} (run through: cargo test --test browser)`);
    process.exit(2);
  }
  return v;
};
const BASE = env("WSHUB_TEST_URL").replace(/\/$/, "");
const TOKEN = env("WSHUB_TEST_TOKEN");
const ADMIN_KEY = env("WSHUB_TEST_ADMIN_KEY");
const BIN = env("WSHUB_TEST_BIN");
const CHROMIUM = process.env.WSHUB_CHROMIUM || "/usr/bin/chromium";
/** Longest wait for any one DOM condition. */
const WAIT_MS = 10_000;
/** The whole run; the cargo test has its own, longer, limit. */
const RUN_LIMIT_MS = 50_000;

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  console.error(`cannot load playwright-core (${e.message}): run tests/browser/install.sh`);
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.error(`no Chromium at ${CHROMIUM}: run tests/browser/install.sh`);
  process.exit(2);
}

const guard = setTimeout(() => {
  console.log(`Bail out! the browser tests took longer than ${RUN_LIMIT_MS} ms`);
  process.exit(1);
}, RUN_LIMIT_MS);
guard.unref();

const pageUrl = (token) => `${BASE}/?token=${encodeURIComponent(token)}`;

/** What the user sees, for failure messages. */
async function snapshot(page) {
  try {
    return await page.evaluate(() => ({
      state: document.getElementById("state")?.innerText,
      error: document.getElementById("error")?.innerText,
      channels: document.getElementById("channels")?.innerText,
    }));
  } catch (e) {
    return `(no snapshot: ${e.message})`;
  }
}

/** Waits until `fn(arg)` is truthy in the page; fails with what the page shows. */
async function waitDom(page, what, fn, arg, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: "raf" });
  } catch (e) {
    throw new Error(
      `timed out after ${timeout} ms waiting for ${what}; the page shows ${JSON.stringify(await snapshot(page))}` +
        ` (${e.message.split("\n")[0]})`,
    );
  }
}

const waitConnected = (page) =>
  waitDom(page, "the connection state to be connected", () => {
    const s = document.getElementById("state");
    return s.dataset.state === "connected" && s.innerText === "connected";
  });

/** Subscribes through the page's form, as a user would, and waits for the ack. */
async function subscribeViaUi(page, channel) {
  await page.fill("#channel", channel);
  await page.click("#subscribe button");
  await waitDom(
    page,
    `the ${channel} badge to say subscribed`,
    (c) => {
      const b = document.querySelector(`.channel[data-channel="${CSS.escape(c)}"] .badge`);
      return b && b.dataset.status === "subscribed" && b.innerText === "subscribed";
    },
    channel,
  );
}

/** The output lines shown in a channel's log, as the user sees them. */
const logLines = (page, channel) =>
  page.evaluate(
    (c) =>
      [...document.querySelectorAll(`.channel[data-channel="${CSS.escape(c)}"] pre.log .line`)].map(
        (l) => l.innerText.replace(/\n$/, ""),
      ),
    channel,
  );

async function publish(body, base = BASE) {
  const r = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `POST /api/publish answered ${r.status}: ${text}`);
  return JSON.parse(text);
}

// --- scenarios ---------------------------------------------------------------

async function subscribeAndReceive(page) {
  await page.goto(pageUrl(TOKEN));
  await waitConnected(page);
  assert.equal(await page.locator("#error").innerText(), "", "no error while connected");

  const channel = "news";
  await subscribeViaUi(page, channel);
  const text = `hello from the API ${process.pid}-${Date.now()}`;
  const reply = await publish({ channel, data: text });
  assert.equal(reply.delivered, 1, `the page is the one subscriber: ${JSON.stringify(reply)}`);

  const expected = `event ${JSON.stringify(text)}`;
  await waitDom(
    page,
    `"${expected}" in the ${channel} view`,
    ([c, e]) =>
      [...document.querySelectorAll(`.channel[data-channel="${c}"] ul.events li`)].some(
        (li) => li.innerText === e,
      ),
    [channel, expected],
  );
  const item = page.locator(`.channel[data-channel="${channel}"] ul.events li`, { hasText: text });
  assert.equal(await item.count(), 1, "the message is shown once");
  assert.ok(await item.isVisible(), "the message is visible");
  // A typed go-ws message through the same API lands in the same view.
  await publish({ type: "notice", channel, data: { n: 1 } });
  await waitDom(
    page,
    `the typed message in the ${channel} view`,
    (c) =>
      [...document.querySelectorAll(`.channel[data-channel="${c}"] ul.events li`)].some(
        (li) => li.innerText === 'notice {"n":1}',
      ),
    channel,
  );
  assert.equal((await snapshot(page)).state, "connected");
}

async function wrongTokenShowsAuthFailure(page) {
  // Every state the page goes through, from its first script on.
  await page.addInitScript(() => {
    window.__states = [];
    new MutationObserver(() => {
      const s = document.getElementById("state");
      if (!s) return;
      const v = `${s.dataset.state}|${s.textContent}`;
      if (window.__states[window.__states.length - 1] !== v) window.__states.push(v);
    }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
  });
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));

  await page.goto(pageUrl(`wrong-${TOKEN}`));
  await waitDom(page, "the auth failure", () => document.getElementById("state").dataset.state === "auth-failed");
  assert.equal(await page.locator("#state").innerText(), "authentication failed");
  assert.equal(await page.locator("#error").innerText(), "Authentication failed: check the token.");
  assert.ok(await page.locator("#state").isVisible(), "the state is visible");
  assert.ok(await page.locator("#error").isVisible(), "the error is visible");
  const states = await page.evaluate(() => window.__states);
  assert.ok(
    !states.some((s) => s.startsWith("connected|")),
    `the page never showed connected: ${JSON.stringify(states)}`,
  );
  // It learned the token was bad from /api/whoami and did not dial (and so
  // does not retry) the WebSocket with it.
  assert.deepEqual(sockets, [], "no WebSocket with a refused token");

  // Fixing the token in the field and pressing Connect recovers.
  await page.fill("#token", TOKEN);
  await page.click("#connect");
  await waitConnected(page);
  assert.equal(await page.locator("#error").innerText(), "");
}

async function execStreamsLineByLine(page) {
  await page.goto(pageUrl(TOKEN));
  await waitConnected(page);
  const id = `browser-${process.pid}`;
  const channel = `process:${id}`;
  await subscribeViaUi(page, channel);

  // Record every state of the channel's view: its log lines and badge.
  await page.evaluate((c) => {
    const el = document.querySelector(`.channel[data-channel="${CSS.escape(c)}"]`);
    window.__views = [];
    const record = () => {
      const lines = [...el.querySelectorAll("pre.log .line")].map((l) => l.textContent.replace(/\n$/, ""));
      const badge = el.querySelector(".badge");
      const v = { lines, status: badge.dataset.status, badge: badge.textContent };
      const last = window.__views[window.__views.length - 1];
      if (!last || JSON.stringify(last) !== JSON.stringify(v)) window.__views.push(v);
    };
    new MutationObserver(record).observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
  }, channel);

  // The command blocks on its stdin twice (`read`), which the test releases
  // only once the page shows the lines so far: the intermediate states are
  // observed while the process is provably still running. Then three lines
  // with small sleeps between them, and exit 3.
  const script =
    "echo 'step 1'; read a; echo 'step 2 (stderr)' >&2; read b; " +
    "echo 'step 3'; sleep 0.2; echo 'step 4'; sleep 0.2; echo 'step 5'; exit 3";
  const args = ["exec", "--url", BASE, "--admin-key", ADMIN_KEY, "--id", id, "--", "sh", "-c", script];
  const child = spawn(BIN, args, { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let exit = null;
  exited.then((e) => (exit = e));

  try {
    const all = ["step 1", "step 2 (stderr)", "step 3", "step 4", "step 5"];
    for (const n of [1, 2]) {
      await waitDom(
        page,
        `${n} line(s) in the ${channel} log`,
        ([c, n]) => document.querySelectorAll(`.channel[data-channel="${CSS.escape(c)}"] pre.log .line`).length >= n,
        [channel, n],
      );
      assert.deepEqual(await logLines(page, channel), all.slice(0, n), "only the first lines so far");
      assert.equal(exit, null, `wshub exec is still running (${output})`);
      const badge = page.locator(`.channel[data-channel="${channel}"] .badge`);
      assert.equal(await badge.innerText(), "subscribed", "no status before the exit");
      child.stdin.write("\n");
    }
    child.stdin.end();

    await waitDom(
      page,
      `the ${channel} badge to show the exit`,
      (c) => document.querySelector(`.channel[data-channel="${CSS.escape(c)}"] .badge`).dataset.status === "exited",
      channel,
    );
    const badge = page.locator(`.channel[data-channel="${channel}"] .badge`);
    assert.equal(await badge.innerText(), "exited (3)");
    assert.equal(await badge.getAttribute("data-exit-code"), "3");
    assert.match(await badge.getAttribute("class"), /\bfail\b/, "a non-zero exit is marked as a failure");
    assert.ok(await badge.isVisible(), "the badge is visible");
    assert.deepEqual(await logLines(page, channel), all, "every line, in order");
    assert.ok(await page.locator(`.channel[data-channel="${channel}"] pre.log`).isVisible());

    // The log grew one line at a time, in order, and the status came last.
    const views = await page.evaluate(() => window.__views);
    const growth = [];
    for (const v of views) {
      const prev = growth[growth.length - 1];
      if (JSON.stringify(prev) !== JSON.stringify(v.lines)) growth.push(v.lines);
    }
    assert.deepEqual(
      growth,
      all.map((_, i) => all.slice(0, i + 1)),
      `the log grows line by line: ${JSON.stringify(views)}`,
    );
    for (const v of views) {
      if (v.lines.length < all.length) {
        assert.equal(v.status, "subscribed", `no status while lines are still coming: ${JSON.stringify(views)}`);
      }
    }

    const done = await Promise.race([
      exited,
      new Promise((resolve) => setTimeout(() => resolve(null), WAIT_MS)),
    ]);
    assert.ok(done, `wshub exec did not exit within ${WAIT_MS} ms (${output})`);
    assert.equal(done.code, 3, `wshub exec mirrors the exit code (${output})`);
  } finally {
    if (exit === null) child.kill("SIGKILL");
  }
}

async function longLogKeepsTheNewestLines(page) {
  // ?lines=20 lowers the page's cap (5,000 by default) so the case is quick.
  await page.goto(`${pageUrl(TOKEN)}&lines=20`);
  await waitConnected(page);
  const channel = `process:cap-${process.pid}`;
  await subscribeViaUi(page, channel);
  for (let i = 0; i < 30; i++) {
    await publish({ type: "process_output", channel, data: `line ${i}` });
  }
  await waitDom(
    page,
    `line 29 in the ${channel} log`,
    (c) => {
      const lines = document.querySelectorAll(`.channel[data-channel="${CSS.escape(c)}"] pre.log .line`);
      return lines.length > 0 && lines[lines.length - 1].innerText.replace(/\n$/, "") === "line 29";
    },
    channel,
  );
  const lines = await logLines(page, channel);
  const expected = Array.from({ length: 20 }, (_, k) => `line ${k + 10}`);
  assert.deepEqual(lines, expected, "the newest 20 lines, in order");
}

/**
 * A TCP proxy in front of the server whose connections the test can cut:
 * `cut()` destroys every connection through it and refuses new ones until
 * `restore(target)`, as a network drop would (to another server, if given).
 */
function startProxy(target) {
  let { hostname, port } = new URL(target);
  const open = new Set();
  let up = true;
  const server = net.createServer((client) => {
    if (!up) return client.destroy();
    const upstream = net.connect(Number(port), hostname);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(drop);
    };
    open.add(drop);
    for (const s of [client, upstream]) {
      s.on("error", drop);
      s.on("close", drop);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        cut() {
          up = false;
          for (const drop of [...open]) drop();
        },
        restore(other) {
          if (other) ({ hostname, port } = new URL(other));
          up = true;
        },
        close() {
          this.cut();
          server.close();
        },
      }),
    ),
  );
}

async function resumesAfterADrop(page) {
  const proxy = await startProxy(BASE);
  try {
    await page.goto(`${proxy.url}/?token=${encodeURIComponent(TOKEN)}`);
    await waitConnected(page);
    const channel = `process:resume-${process.pid}`;
    await subscribeViaUi(page, channel);
    const hasLines = (n) =>
      waitDom(
        page,
        `${n} line(s) in the ${channel} log`,
        ([c, n]) => document.querySelectorAll(`.channel[data-channel="${CSS.escape(c)}"] pre.log .line`).length >= n,
        [channel, n],
        // A reconnect after the drop waits out the page's backoff (up to 8 s).
        3 * WAIT_MS,
      );
    const all = Array.from({ length: 24 }, (_, i) => `line ${i}`);
    const send = async (from, to) => {
      for (const line of all.slice(from, to)) await publish({ type: "process_output", channel, data: line });
    };
    await send(0, 8);
    await hasLines(8);
    proxy.cut();
    await waitDom(page, "the page to see the drop", () => document.getElementById("state").dataset.state !== "connected");
    // Published while the page is away: the hub keeps them for its resume.
    await send(8, 16);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    proxy.restore();
    // Maybe before the page is back, maybe after: either way once each.
    await send(16, 24);
    await hasLines(24);
    await waitConnected(page);
    const section = page.locator(`.channel[data-channel="${channel}"]`);
    assert.equal(await section.getAttribute("data-recovered"), "true", "the page resumed where it was");
    assert.equal(await section.locator("li.note").count(), 0, "no missing-output notice");
    // A late duplicate would come before this one on the socket.
    await publish({ type: "process_output", channel, data: "last" });
    await hasLines(25);
    assert.deepEqual(await logLines(page, channel), [...all, "last"], "every line exactly once, in order");
    assert.equal(await section.getAttribute("data-offset"), "25", "the page tracked every offset");
  } finally {
    proxy.close();
  }
}

/** Another `wshub serve` with the same keys: its base URL and process. */
async function startOtherHub() {
  const child = spawn(
    BIN,
    ["serve", "--listen", "127.0.0.1:0", "--api-key", `${TOKEN}=alice`, "--admin-key", ADMIN_KEY, "--log-level", "info"],
    // --log-level: RUST_LOG from the environment must not hide the listening line.
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line from the other hub: ${log}`)), WAIT_MS);
    child.stderr.on("data", (d) => {
      log += d;
      const m = /listening on ws:\/\/(\S+)\/ws/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`the other hub exited (${code}): ${log}`)));
  });
  return { base: `http://${addr}`, child };
}

async function aResumeOnAnotherHubSaysSo(page) {
  const proxy = await startProxy(BASE);
  let other = null;
  try {
    await page.goto(`${proxy.url}/?token=${encodeURIComponent(TOKEN)}`);
    await waitConnected(page);
    const channel = `process:moved-${process.pid}`;
    await subscribeViaUi(page, channel);
    for (const data of ["before 1", "before 2"]) await publish({ type: "process_output", channel, data });
    await waitDom(
      page,
      `2 lines in the ${channel} log`,
      (c) => document.querySelectorAll(`.channel[data-channel="${CSS.escape(c)}"] pre.log .line`).length === 2,
      channel,
    );
    // The page comes back to another hub (a restart, a failover): another
    // epoch, so what was missed cannot be replayed, and the page says so.
    other = await startOtherHub();
    proxy.cut();
    await waitDom(page, "the page to see the drop", () => document.getElementById("state").dataset.state !== "connected");
    proxy.restore(other.base);
    await waitDom(
      page,
      "the failed resume to show",
      (c) => {
        const el = document.querySelector(`.channel[data-channel="${CSS.escape(c)}"]`);
        return el.dataset.recovered === "false" && el.querySelector("li.note");
      },
      channel,
      3 * WAIT_MS,
    );
    const note = page.locator(`.channel[data-channel="${channel}"] li.note`);
    assert.match(await note.innerText(), /some output may be missing/);
    assert.ok(await note.isVisible(), "the notice is visible");
    await publish({ type: "process_output", channel, data: "after" }, other.base);
    await waitDom(
      page,
      `the live line from the other hub`,
      (c) => document.querySelectorAll(`.channel[data-channel="${CSS.escape(c)}"] pre.log .line`).length === 3,
      channel,
    );
    assert.deepEqual(await logLines(page, channel), ["before 1", "before 2", "after"], "then live from there");
  } finally {
    proxy.close();
    other?.child.kill();
  }
}

// --- runner ------------------------------------------------------------------

const scenarios = [
  ["valid token: connected, subscribe via the page, an API publish appears in the channel view", subscribeAndReceive],
  ["wrong token: the page says authentication failed and never connected", wrongTokenShowsAuthFailure],
  ["wshub exec: output lines appear one by one in order, badge shows exited (3)", execStreamsLineByLine],
  ["a long log keeps only the newest lines (?lines=20), in order", longLogKeepsTheNewestLines],
  [
    "a page whose socket drops for 3 s shows every output line exactly once, in order (it resumes with recover)",
    resumesAfterADrop,
    // What Chromium logs while the proxy refuses it.
    /net::ERR_|WebSocket connection to .* failed/,
  ],
  [
    "a page that comes back to another hub (new epoch) says output may be missing, then goes on live",
    aResumeOnAnotherHubSaysSo,
    /net::ERR_|WebSocket connection to .* failed/,
  ],
];

const started = Date.now();
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // --no-sandbox: Chromium refuses to run sandboxed as root (CI containers).
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
console.log(`# Chromium ${browser.version()} via playwright-core, against ${BASE}`);
let failed = 0;
try {
  for (const [i, [name, run, alsoExpected]] of scenarios.entries()) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const problems = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()} (${m.location().url})`);
    });
    const t = Date.now();
    try {
      await run(page);
      // Chromium logs failed loads: the page has no favicon, and the
      // wrong-token scenario's /api/whoami answers 401. Anything else is a
      // bug in the page.
      const expected = /status of (404 .*\/favicon\.ico|401 .*\/api\/whoami\?)/;
      const unexpected = problems.filter((p) => !expected.test(p) && !alsoExpected?.test(p));
      assert.deepEqual(unexpected, [], "no script errors in the page");
      console.log(`ok ${i + 1} - ${name} (${Date.now() - t} ms)`);
    } catch (e) {
      failed += 1;
      console.log(`not ok ${i + 1} - ${name} (${Date.now() - t} ms)`);
      for (const line of String(e.stack || e).split("\n")) console.log(`  # ${line}`);
      for (const p of problems) console.log(`  # ${p}`);
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
}
console.log(`# ${scenarios.length - failed} passed, ${failed} failed in ${Date.now() - started} ms`);
process.exit(failed ? 1 : 0);

// Browser test of the playground page: the real server (target/release/ssocket,
// or $TEST_SERVER_BIN) on a temp copy of the repo's plugs/, Debian's chromium
// (/usr/bin/chromium, or $CHROMIUM_PATH) driven by playwright-core.
// Run: clients/playground/run-test.sh, or in clients/playground after
// `npm install`: npm test (= node --experimental-websocket --test test/).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { SsocketClient } from '../../js/ssocket.js';
import { binary, repoRoot, startServer } from '../../js/testing/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const screenshotPath = path.resolve(here, '../screenshot.png');
const T = 30_000; // per-test timeout

let server, context, page, plugsDir, scratch;
const pageErrors = [];
const others = []; // raw clients to close at the end

before(async () => {
  assert.ok(existsSync(binary), `server binary not found at ${binary}: run \`cargo build --release\` in ${repoRoot} first (or set TEST_SERVER_BIN)`);
  assert.ok(existsSync(chromiumPath), `chromium not found at ${chromiumPath}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  assert.equal(typeof globalThis.WebSocket, 'function', 'no global WebSocket: run Node 20 with --experimental-websocket');
  scratch = mkdtempSync(path.join(tmpdir(), 'ssocket-playground-'));
  plugsDir = path.join(scratch, 'plugs');
  cpSync(path.join(repoRoot, 'plugs'), plugsDir, { recursive: true });
  server = await startServer(['--INSECURE.port', '0', '--plugsFolder', plugsDir]);
  context = await chromium.launchPersistentContext(path.join(scratch, 'profile'), {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1200, height: 800 },
  });
  page = context.pages()[0] ?? await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e));
});

after(async () => {
  for (const c of others) c.close();
  await context?.close();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

// ---- helpers ----
const rowSel = ({ dir = 'in', type, event } = {}) =>
  `#log .row[data-dir="${dir}"]` + (type ? `[data-type="${type}"]` : '') + (event !== undefined ? `[data-event="${event}"]` : '');

/** The rows matching `sel` as {type, event, dir, text}. */
const rows = (sel) => page.$$eval(sel, (rs) => rs.map((r) => ({ ...r.dataset, text: r.querySelector('.payload').textContent })));

/** Wait until at least `n` rows match, then return them. */
async function waitRows(sel, n, timeout = 10_000) {
  await page.waitForFunction(([s, k]) => document.querySelectorAll(s).length >= k, [sel, n], { timeout });
  return rows(sel);
}

/** Pick a plug in the list, type the payload, press Send. */
async function send(event, payloadText) {
  await page.click(`#plugs li[data-event="${event}"]`);
  assert.equal(await page.inputValue('#event'), event);
  await page.fill('#payload', payloadText);
  await page.click('#send');
}

async function clearLog() {
  await page.click('#clear');
  assert.equal(await page.locator('#log .row').count(), 0);
}

// ---- tests ----
test('the page connects and lists the plugs', { timeout: T }, async () => {
  const res = await page.goto(server.http + '/');
  assert.equal(res.status(), 200);
  assert.equal(await page.title(), 'ssocket playground');
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10_000 });
  await page.waitForSelector('#plugs li[data-event="echo"]');
  await page.waitForSelector('#plugs li[data-event="multiyield"]');
  const events = await page.$$eval('#plugs li', (lis) => lis.map((li) => li.dataset.event));
  for (const e of ['broadcast', 'echo', 'long', 'multiyield', 'sync', 'test/sub']) assert.ok(events.includes(e), `${e} in ${events}`);
  assert.match(await page.textContent('#plugs li[data-event="sync"] .fns'), /send_changes\(\)/);
  assert.equal(await page.inputValue('#type'), '0', 'type defaults to MESSAGE');
});

test('echo: the sent row and the echoed payload appear', { timeout: T }, async () => {
  await send('echo', '{"hello": "playground", "n": 42}');
  const [reply] = await waitRows(rowSel({ type: 'MESSAGE', event: 'echo' }), 1);
  assert.deepEqual(JSON.parse(reply.text), { hello: 'playground', n: 42 });
  const [sent] = await rows(rowSel({ dir: 'out', event: 'echo' }));
  assert.deepEqual(JSON.parse(sent.text), { hello: 'playground', n: 42 });
  assert.match(await page.textContent('#log .row[data-dir="in"] .time'), /^\d\d:\d\d:\d\d\.\d\d\d$/);
});

test('invalid JSON is refused with an inline error', { timeout: T }, async () => {
  const sentBefore = await page.locator(rowSel({ dir: 'out' })).count();
  await send('echo', '{"oops": ');
  await page.waitForSelector('#payload-error:not(:empty)');
  assert.match(await page.textContent('#payload-error'), /Invalid JSON/);
  assert.equal(await page.locator(rowSel({ dir: 'out' })).count(), sentBefore, 'nothing was sent');
  await page.fill('#payload', '{}');
  await page.click('#send');
  await page.waitForSelector('#payload-error:empty', { state: 'attached' });
});

test('multiyield streams 5 rows in order', { timeout: T }, async () => {
  await clearLog();
  await send('multiyield', '{"count":5}');
  const got = await waitRows(rowSel({ event: 'multiyield' }), 5);
  await new Promise((r) => setTimeout(r, 200)); // nothing more should come
  const all = await rows(rowSel({ event: 'multiyield' }));
  assert.deepEqual(all.map((r) => JSON.parse(r.text).name), ['iteration 0', 'iteration 1', 'iteration 2', 'iteration 3', 'iteration 4']);
  assert.ok(got.every((r) => r.type === 'MESSAGE'));
});

test('sync: SYNC rows show the reconstructed object', { timeout: T }, async () => {
  await clearLog();
  await send('sync', '{}');
  const got = await waitRows(rowSel({ type: 'SYNC', event: 'sync' }), 50);
  assert.equal(got.length, 50);
  const last = JSON.parse(got.at(-1).text);
  assert.equal(last.age, 735); // 49 * 15
  assert.equal(last.name, 'Ada Lovelace');
  assert.equal(last.address.city, 'London');
  assert.equal(JSON.parse(got[1].text).age, 15);
  assert.equal(await page.locator('#log .row[data-type="CLIENT_ERROR"]').count(), 0);
  assert.equal(await page.textContent(`${rowSel({ type: 'SYNC', event: 'sync' })} .tag`), 'full object');
});

test('the plug list follows the plugs folder live', { timeout: T }, async () => {
  writeFileSync(path.join(plugsDir, 'hello_live.rhai'), 'fn greet(msg, yield_msg) {\n    yield_msg(#{ payload: #{ hi: "there" } });\n}\n');
  await page.waitForSelector('#plugs li[data-event="hello_live"]', { timeout: 6000 });
  assert.match(await page.textContent('#plugs li[data-event="hello_live"] .fns'), /greet\(\)/);
  await clearLog();
  await send('hello_live', '{}');
  const [reply] = await waitRows(rowSel({ event: 'hello_live' }), 1);
  assert.deepEqual(JSON.parse(reply.text), { hi: 'there' });

  writeFileSync(path.join(plugsDir, 'broken.rhai'), 'fn oops(msg, yield_msg) {\n    let x = ;\n}\n');
  const err = await page.waitForSelector('#plugs li[data-event="broken"] .error', { timeout: 6000 });
  assert.match(await err.textContent(), /line 2, column \d+/);
  assert.equal(await err.evaluate((e) => getComputedStyle(e).color), 'rgb(224, 49, 49)'); // red

  unlinkSync(path.join(plugsDir, 'hello_live.rhai'));
  await page.waitForSelector('#plugs li[data-event="hello_live"]', { state: 'detached', timeout: 6000 });
});

test("another client's broadcast appears in the log", { timeout: T }, async () => {
  const other = new SsocketClient(server.url);
  others.push(other);
  await other.ready;
  other.send('broadcast', { from: 'another client' });
  const [row] = await waitRows(rowSel({ type: 'BROADCAST', event: 'broadcast' }), 1);
  assert.deepEqual(JSON.parse(row.text), { from: 'another client' });
});

test('NOT_FOUND and ERROR rows', { timeout: T }, async () => {
  await page.fill('#event', 'no/such/plug');
  await page.fill('#payload', '{}');
  await page.click('#send');
  await waitRows(rowSel({ type: 'NOT_FOUND', event: 'no/such/plug' }), 1);
  await send('broken', '{}');
  const [err] = await waitRows(rowSel({ type: 'ERROR', event: 'broken' }), 1);
  assert.match(err.text, /compile_error/);
  const bg = await page.$eval(rowSel({ type: 'ERROR', event: 'broken' }), (r) => getComputedStyle(r).backgroundColor);
  assert.notEqual(bg, 'rgba(0, 0, 0, 0)', 'ERROR rows are styled');
});

test('a tagged request shows its tag on every reply and an END row', { timeout: T }, async () => {
  await clearLog();
  await page.check('#tagged');
  try {
    await send('multiyield', '{"count": 2}');
    const [sent] = await rows(rowSel({ dir: 'out' }));
    assert.match(sent.event, /^multiyield#\d+$/);
    const replies = await waitRows(rowSel({ type: 'MESSAGE', event: sent.event }), 2);
    assert.deepEqual(replies.map((r) => JSON.parse(r.text).name), ['iteration 0', 'iteration 1']);
    await waitRows(rowSel({ type: 'END', event: sent.event }), 1);
    assert.equal(await page.textContent(`${rowSel({ type: 'END', event: sent.event })} .reqtag`), `#${sent.event.split('#')[1]}`);
  } finally {
    await page.uncheck('#tagged');
  }
});

test('the rooms view shows who is in which room', { timeout: T }, async () => {
  const ada = new SsocketClient(server.url);
  others.push(ada);
  await ada.ready;
  const joined = await ada.request('chat/join', { room: 'lobby', name: 'Ada' });
  assert.equal(joined.room, 'lobby');
  await send('clock', '{}'); // the page itself joins "clock"
  await page.waitForSelector('#rooms li[data-room="lobby"]', { timeout: 5000 });
  await page.waitForSelector('#rooms li[data-room="clock"]', { timeout: 5000 });
  assert.match(await page.textContent('#rooms li[data-room="lobby"]'), new RegExp(`lobby · 1.*${joined.you.client}`));
  await ada.request('chat/leave', { room: 'lobby' });
  await page.waitForSelector('#rooms li[data-room="lobby"]', { state: 'detached', timeout: 5000 });
  await send('clock', '{"stop": true}');
  await page.waitForSelector('#rooms li[data-room="clock"]', { state: 'detached', timeout: 5000 });
});

test('screenshot', { timeout: T }, async () => {
  await clearLog();
  await send('echo', '{"hello": "world"}');
  await waitRows(rowSel({ event: 'echo' }), 1);
  await send('multiyield', '{"count": 3}');
  await waitRows(rowSel({ event: 'multiyield' }), 3);
  others[0].send('broadcast', { from: 'another client', text: 'hi everyone' });
  await waitRows(rowSel({ type: 'BROADCAST' }), 1);
  await send('broken', '{}');
  await waitRows(rowSel({ type: 'ERROR' }), 1);
  await page.click('#plugs li[data-event="multiyield"]');
  await page.fill('#payload', '{"count": 3}');
  await page.screenshot({ path: screenshotPath });
  assert.ok(existsSync(screenshotPath));
});

test('the page reconnects after a server restart', { timeout: T }, async () => {
  const port = server.port;
  await server.stop();
  await page.waitForSelector('#status:not([data-state="open"])', { timeout: 5000 });
  assert.equal(await page.isDisabled('#send'), true);
  server = await startServer(['--INSECURE.port', String(port), '--plugsFolder', plugsDir]);
  await page.waitForSelector('#status[data-state="open"]', { timeout: 15_000 });
  await clearLog();
  await send('echo', '{"again": true}');
  const [reply] = await waitRows(rowSel({ event: 'echo' }), 1);
  assert.deepEqual(JSON.parse(reply.text), { again: true });
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});

test('--playground false serves none of it', { timeout: T }, async () => {
  const off = await startServer(['--INSECURE.port', '0', '--plugsFolder', plugsDir, '--playground', 'false']);
  try {
    for (const p of ['/', '/api/plugs', '/api/rooms', '/ssocket.js']) {
      const res = await fetch(off.http + p);
      assert.notEqual(res.status, 200, `${p} must not be served`);
      await res.arrayBuffer();
    }
    const c = new SsocketClient(off.url); // the WebSocket still works
    others.push(c);
    await c.ready;
    const reply = new Promise((resolve) => c.on('echo', resolve));
    c.send('echo', { still: 'works' });
    assert.deepEqual(await reply, { still: 'works' });
  } finally {
    await off.stop();
  }
});

// Tests against the real server: target/release/ssocket with the repo's plugs.
// Run from the repo root: node --experimental-websocket --test clients/js/test/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { EventType, SsocketClient } from '../ssocket.js';
import { binary, repoRoot, startServer as start } from '../testing/server.mjs';

const plugsFolder = path.join(repoRoot, 'plugs');

/** Start the server on `port` (0: a free one) with the repo's plugs. */
function startServer(port = 0) {
  if (!existsSync(binary)) {
    return Promise.reject(new Error(`server binary not found at ${binary}: run \`cargo build --release\` in ${repoRoot} first (or set TEST_SERVER_BIN)`));
  }
  return start(['--INSECURE.port', String(port), '--plugsFolder', plugsFolder]);
}

/** Reject after `ms` with a message naming what was awaited. */
function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next message of `event` (via on(event)), as [payload, meta]. */
function next(client, event, ms = 5000) {
  return within(ms, new Promise((resolve) => {
    const off = client.on(event, (payload, meta) => { off(); resolve([payload, meta]); });
  }), `a "${event}" message`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let server;
const clients = [];
async function connect(options) {
  const c = new SsocketClient(server.url, options);
  clients.push(c);
  await within(5000, c.ready, 'the connection');
  return c;
}

before(async () => { server = await startServer(0); });
after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

test('echo returns the payload', async () => {
  const c = await connect();
  assert.equal(c.connected, true);
  const payload = { text: 'héllo 🎉', n: 42, list: [1, null, true, { x: 'y' }], f: -1.5 };
  const reply = next(c, 'echo');
  c.send('echo', payload);
  assert.deepEqual(await reply, [payload, { type: EventType.MESSAGE, event: 'echo' }]);
  const scalar = next(c, 'echo');
  c.send('echo', 'just a string');
  assert.deepEqual((await scalar)[0], 'just a string');
});

test('a plug in a sub-folder answers its event', async () => {
  const c = await connect();
  const reply = next(c, 'test/sub');
  c.send('test/sub', { q: 1 });
  assert.deepEqual((await reply)[0], { from: 'test/sub', got: { q: 1 } });
});

test('multiyield {"count":100} streams 100 replies in order', async () => {
  const c = await connect();
  const got = [];
  const done = within(10_000, new Promise((resolve) => {
    c.on('multiyield', (payload, meta) => {
      assert.equal(meta.type, EventType.MESSAGE);
      got.push(payload.name);
      if (got.length === 100) resolve();
    });
  }), '100 multiyield replies');
  c.send('multiyield', { count: 100 });
  await done;
  assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => `iteration ${i}`));
});

test('broadcast reaches the other client and not the sender', async () => {
  const [a, b] = [await connect(), await connect()];
  const seenByA = [];
  a.on('broadcast', (p) => seenByA.push(p));
  const atB = next(b, 'broadcast');
  a.send('broadcast', { from: 'a', n: 1 });
  assert.deepEqual(await atB, [{ from: 'a', n: 1 }, { type: EventType.BROADCAST, event: 'broadcast' }]);
  // Give a stray copy to the sender time to arrive, then check there was none.
  const echo = next(a, 'echo');
  a.send('echo', {});
  await echo;
  await sleep(200);
  assert.deepEqual(seenByA, []);
});

test('SYNC: the handler receives all 50 reconstructed payloads', async () => {
  const c = await connect();
  const got = [];
  const errors = [];
  c.onError((e) => errors.push(e));
  const done = within(10_000, new Promise((resolve) => {
    c.on('sync', (payload, meta) => {
      got.push([payload, meta]);
      if (got.length === 50) resolve();
    });
  }), '50 sync replies');
  c.send('sync', {});
  await done;
  assert.deepEqual(errors, []);
  got.forEach(([payload, meta], i) => {
    assert.deepEqual(meta, { type: EventType.SYNC, event: 'sync' });
    assert.deepEqual(payload, {
      name: 'Ada Lovelace',
      bio: "Mathematician and writer, chiefly known for her work on Charles Babbage's proposed mechanical general-purpose computer, the Analytical Engine.",
      tags: ['math', 'poetry', 'engines', 'notes', 'bernoulli'],
      address: { street: "12 St James's Square", city: 'London', country: 'UK' },
      age: i * 15,
    }, `payload ${i}`);
  });
  // A second request starts again from its own bytes.
  const again = next(c, 'sync');
  c.send('sync', { some: 'other request body that is longer than the first' });
  assert.equal((await again)[0].age, 0);
});

test('an unknown event gets NOT_FOUND, also for paths outside the plugs folder', async () => {
  const c = await connect();
  const handled = [];
  c.on('no/such/plug', (p) => handled.push(p));
  for (const event of ['no/such/plug', '../../etc/passwd']) {
    const notFound = within(5000, new Promise((resolve) => { const off = c.onNotFound((e) => { off(); resolve(e); }); }), 'NOT_FOUND');
    const any = within(5000, new Promise((resolve) => { const off = c.on('*', (p, m) => { off(); resolve([p, m]); }); }), 'a message');
    c.send(event, {});
    assert.equal(await notFound, event);
    assert.deepEqual(await any, [{}, { type: EventType.NOT_FOUND, event }]);
  }
  assert.deepEqual(handled, [], 'on(event) does not get NOT_FOUND');
});

test('an ERROR reply reaches onError with its code and event', async () => {
  const c = await connect();
  const error = within(5000, new Promise((resolve) => c.onError(resolve)), 'an ERROR');
  c.send('echo', { big: 'x'.repeat(260_000) }); // just over the default payloadLimit (250000)
  const err = await error;
  assert.equal(err.code, 'payload_too_large');
  assert.equal(err.event, 'echo');
  assert.match(err.message, /payload too large/);
  // The connection stays usable.
  const reply = next(c, 'echo');
  c.send('echo', { ok: true });
  assert.deepEqual((await reply)[0], { ok: true });
});

test('off removes a handler; handlers get every message on "*"', async () => {
  const c = await connect();
  const calls = [];
  const h = (p) => calls.push(p);
  c.on('echo', h);
  c.off('echo', h);
  const all = [];
  c.on('*', (p, m) => all.push(m.event));
  const reply = next(c, 'echo');
  c.send('echo', 1);
  await reply;
  assert.deepEqual(calls, []);
  assert.deepEqual(all, ['echo']);
});

test('send throws when not connected; ready rejects after close()', async () => {
  const c = new SsocketClient(server.url);
  clients.push(c);
  assert.throws(() => c.send('echo', {}), /not connected; await client.ready first/);
  await c.ready;
  const closed = within(5000, new Promise((resolve) => c.onClose(resolve)), 'the close');
  c.close();
  assert.equal((await closed).willReconnect, false);
  await assert.rejects(c.ready, /client closed/);
  assert.throws(() => c.send('echo', {}), /not connected \(client closed\)/);
});

test('ready rejects when the server is unreachable and reconnect is off', async () => {
  const c = new SsocketClient('ws://127.0.0.1:1/');
  await assert.rejects(within(5000, c.ready, 'the rejection'), /closed/);
});

test('reconnect: the client comes back by itself after a server restart', async () => {
  const own = await startServer(0);
  let restarted;
  try {
    const c = new SsocketClient(own.url, { reconnect: { minDelay: 50, maxDelay: 400 } });
    clients.push(c);
    await within(5000, c.ready, 'the first connection');
    const first = next(c, 'echo');
    c.send('echo', { round: 1 });
    assert.deepEqual((await first)[0], { round: 1 });

    const opens = [];
    c.onOpen(() => opens.push(Date.now()));
    const closed = within(5000, new Promise((resolve) => c.onClose(resolve)), 'the close');
    await own.stop('SIGKILL');
    assert.equal((await closed).willReconnect, true);
    assert.equal(c.connected, false);
    assert.throws(() => c.send('echo', {}), /not connected/);
    await sleep(300); // let a few reconnect attempts fail

    restarted = await startServer(own.port);
    assert.equal(restarted.port, own.port);
    await within(10_000, c.ready, 'the reconnection');
    assert.equal(opens.length, 1);
    const second = next(c, 'echo');
    c.send('echo', { round: 2 });
    assert.deepEqual((await second)[0], { round: 2 });
    c.close();
  } finally {
    await own.stop('SIGKILL');
    await restarted?.stop();
  }
});

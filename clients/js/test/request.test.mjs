// request() and stream() against the real server, with fixture plugs in a
// temporary plugs folder: tagged requests (SPEC 10.3), many in flight on
// one connection, each matched to its own replies and end.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SsocketClient } from '../ssocket.js';
import { binary, repoRoot, startServer } from '../testing/server.mjs';

const PLUGS = {
  'echo.rhai': 'fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }',
  // Answers after a delay the request chooses, so replies come back out of order.
  'slow.rhai': 'fn slow(msg, yield_msg) { sleep(msg.payload.ms); yield_msg(#{ payload: msg.payload.i }); }',
  'count.rhai': 'fn count(msg, yield_msg) { for i in 0..msg.payload.n { yield_msg(#{ payload: i }); } }',
  'fail.rhai': 'fn fail(msg, yield_msg) { yield_msg(#{ payload: "first" }); throw "it broke"; }',
  'quiet.rhai': 'fn quiet(msg, yield_msg) { }',
  'tag.rhai': 'fn tag(msg, yield_msg) { yield_msg(#{ payload: #{ event: msg.event, tag: msg.tag } }); }',
};

let server;
const clients = [];

async function connect(url = server.url) {
  const c = new SsocketClient(url);
  clients.push(c);
  await c.ready;
  return c;
}

before(async () => {
  if (!existsSync(binary)) throw new Error(`server binary not found at ${binary}: run \`cargo build --release\` in ${repoRoot}`);
  const dir = mkdtempSync(path.join(tmpdir(), 'ssocket-request-'));
  for (const [name, source] of Object.entries(PLUGS)) writeFileSync(path.join(dir, name), source);
  server = await startServer(['--INSECURE.port', '0', '--plugsFolder', dir, '--initFile', path.join(dir, 'none.rhai')]);
  server.dir = dir;
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

test('request resolves with the first reply', async () => {
  const c = await connect();
  assert.deepEqual(await c.request('echo', { a: [1, 'x'] }), { a: [1, 'x'] });
});

test('plugs see the event without its tag, and the tag', async () => {
  const c = await connect();
  const got = await c.request('tag', {});
  assert.equal(got.event, 'tag');
  assert.match(got.tag, /^[0-9a-z]+$/);
});

test('100 requests in flight on one connection each get their own reply', async () => {
  const c = await connect();
  const n = 100;
  const asks = [];
  for (let i = 0; i < n; i++) asks.push(c.request('slow', { i, ms: (i * 37) % 200 }, { timeoutMs: 20000 }));
  assert.deepEqual(await Promise.all(asks), [...Array(n).keys()]);
});

test('stream yields every reply, in order, and ends with the plug', async () => {
  const c = await connect();
  const got = [];
  for await (const p of c.stream('count', { n: 25 })) got.push(p);
  assert.deepEqual(got, [...Array(25).keys()]);
  // Two streams of the same event at once stay apart.
  const [a, b] = await Promise.all([collect(c.stream('count', { n: 3 })), collect(c.stream('count', { n: 5 }))]);
  assert.deepEqual([a, b], [[0, 1, 2], [0, 1, 2, 3, 4]]);
});

async function collect(iter) {
  const out = [];
  for await (const p of iter) out.push(p);
  return out;
}

test('a plug that ends without replying resolves undefined; its stream is empty', async () => {
  const c = await connect();
  assert.equal(await c.request('quiet', {}), undefined);
  assert.deepEqual(await collect(c.stream('quiet', {})), []);
});

test('ERROR and NOT_FOUND reject with their code', async () => {
  const c = await connect();
  await assert.rejects(c.request('nope', {}), (e) => e.code === 'not_found' && e.event.startsWith('nope#'));
  // The plug's first reply resolves the request; the stream sees the ERROR.
  assert.equal(await c.request('fail', {}), 'first');
  const got = [];
  await assert.rejects(async () => {
    for await (const p of c.stream('fail', {})) got.push(p);
  }, (e) => e.code === 'script_error' && e.payload.plug === 'fail' && /it broke/.test(e.message));
  assert.deepEqual(got, ['first']);
  await assert.rejects(collect(c.stream('nope', {})), (e) => e.code === 'not_found');
});

test('a request with no reply in time rejects with timeout', async () => {
  const c = await connect();
  await assert.rejects(c.request('slow', { i: 1, ms: 3000 }, { timeoutMs: 100 }), (e) => e.code === 'timeout');
  await assert.rejects(collect(c.stream('slow', { i: 1, ms: 3000 }, { timeoutMs: 100 })), (e) => e.code === 'timeout');
  // The connection is fine afterwards.
  assert.deepEqual(await c.request('echo', 'still here'), 'still here');
});

test('breaking out of a stream stops listening to it', async () => {
  const c = await connect();
  const got = [];
  for await (const p of c.stream('count', { n: 50 })) {
    got.push(p);
    if (p === 2) break;
  }
  assert.deepEqual(got, [0, 1, 2]);
  assert.deepEqual(await c.request('echo', 1), 1);
});

test('requests in flight reject with closed when the connection goes', async () => {
  const own = await startServer(['--INSECURE.port', '0', '--plugsFolder', server.dir, '--initFile', path.join(server.dir, 'none.rhai')]);
  const c = new SsocketClient(own.url);
  clients.push(c);
  await c.ready;
  const pending = assert.rejects(c.request('slow', { i: 1, ms: 5000 }, { timeoutMs: 20000 }), (e) => e.code === 'closed');
  const streaming = assert.rejects(collect(c.stream('slow', { i: 2, ms: 5000 })), (e) => e.code === 'closed');
  await new Promise((r) => setTimeout(r, 100));
  await own.stop('SIGKILL'); // not SIGTERM: a graceful stop lets running plugs finish and answer
  await pending;
  await streaming;
});

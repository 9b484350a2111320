// SsocketClient against a fake WebSocket (options.WebSocket): SYNC bookkeeping and errors, no server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventType, SsocketClient, encode, decode } from '../ssocket.js';

class FakeWebSocket {
  static last;
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; FakeWebSocket.last = this; queueMicrotask(() => { this.readyState = 1; this.onopen?.(); }); }
  send(bytes) { this.sent.push(bytes); }
  close(code = 1000, reason = '') { if (this.readyState > 1) return; this.readyState = 3; queueMicrotask(() => this.onclose?.({ code, reason })); }
  receive(bytes) { this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) }); }
}

/** The SYNC message the server would send to turn `from` into `to`. */
function syncMessage(event, from, to) {
  const diff = [[to.length - from.length]];
  for (let i = 0; i < to.length; i++) if (to[i] !== (from[i] ?? 0)) diff.push([i, to[i]]);
  return encode(event, diff, EventType.SYNC);
}

async function client() {
  const c = new SsocketClient('ws://fake/', { WebSocket: FakeWebSocket });
  await c.ready;
  return [c, FakeWebSocket.last];
}

test('send writes the encoded bytes; binaryType is arraybuffer', async () => {
  const [c, ws] = await client();
  c.send('echo', { a: 1 }, EventType.CUSTOM_2);
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.deepEqual(decode(ws.sent[0]), { type: EventType.CUSTOM_2, event: 'echo', payload: { a: 1 } });
  assert.throws(() => c.send('x'.repeat(256)), /at most 255/);
  c.close();
});

test('SYNC diffs apply to the request, then to each previous full message; other messages leave the base alone', async () => {
  const [c, ws] = await client();
  const got = [];
  c.on('s', (payload, meta) => got.push([payload, meta.type]));
  c.send('s', { start: true });
  let prev = ws.sent[0];
  const step = (payload) => { const full = encode('s', payload, EventType.SYNC); ws.receive(syncMessage('s', prev, full)); prev = full; };
  step({ v: 1, text: 'a longer payload than the request' });
  ws.receive(encode('s', { plain: 'message' })); // not SYNC: the base stays
  step({ v: 2 });
  step({ v: 3, zero: '\u0000' });
  assert.deepEqual(got, [
    [{ v: 1, text: 'a longer payload than the request' }, EventType.SYNC],
    [{ plain: 'message' }, EventType.MESSAGE],
    [{ v: 2 }, EventType.SYNC],
    [{ v: 3, zero: '\u0000' }, EventType.SYNC],
  ]);
  c.close();
});

test('a SYNC that cannot apply is reported, not delivered', async () => {
  const [c, ws] = await client();
  const errors = [];
  const got = [];
  c.onError((e) => errors.push([e.code, e.event]));
  c.on('s', (p) => got.push(p));
  ws.receive(encode('s', [[0]], EventType.SYNC)); // nothing sent for "s"
  c.send('s', {});
  ws.receive(encode('s', [[-1000]], EventType.SYNC));
  ws.receive(encode('s', 'not a diff', EventType.SYNC));
  ws.receive(new Uint8Array([0, 0, 0, 99, 0, 0])); // undecodable frame
  assert.deepEqual(got, []);
  assert.deepEqual(errors, [['sync_failed', 's'], ['sync_failed', 's'], ['sync_failed', 's'], ['bad_message', undefined]]);
  c.close();
});

test('handler exceptions become handler_failed errors and do not stop other handlers', async () => {
  const [c, ws] = await client();
  const errors = [];
  c.onError((e) => errors.push(e.code));
  const seen = [];
  c.on('e', () => { throw new Error('boom'); });
  c.on('e', (p) => seen.push(p));
  ws.receive(encode('e', 1));
  assert.deepEqual(seen, [1]);
  assert.deepEqual(errors, ['handler_failed']);
  c.close();
});

test('constructor explains a missing WebSocket', () => {
  const saved = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new SsocketClient('ws://x/'), /no WebSocket: pass options.WebSocket/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

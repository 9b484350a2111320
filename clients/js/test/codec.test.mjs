// Pure unit tests: encode/decode and applySync, no server needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventType, encode, decode, applySync } from '../ssocket.js';

const frame = (bytes) => {
  const out = new Uint8Array(bytes.length + 4);
  new DataView(out.buffer).setUint32(0, out.length);
  out.set(bytes, 4);
  return out;
};

test('EventType has the wire values', () => {
  assert.deepEqual(
    Object.entries(EventType),
    ['MESSAGE', 'BROADCAST', 'AUTH', 'SYNC', 'ERROR', 'NOT_FOUND', 'CUSTOM_1', 'CUSTOM_2', 'CUSTOM_3', 'CUSTOM_4', 'CUSTOM_5', 'END'].map((k, i) => [k, i]),
  );
  assert.ok(Object.isFrozen(EventType));
});

test('encode writes the documented layout', () => {
  const b = encode('echo', { a: 1 });
  assert.ok(b instanceof Uint8Array);
  assert.deepEqual([...b.subarray(0, 6)], [0, 0, 0, 17, 0, 4]);
  assert.equal(new TextDecoder().decode(b.subarray(6)), 'echo{"a":1}');
  assert.equal(encode('e', 1, EventType.SYNC)[4], 3);
  assert.equal(new TextDecoder().decode(encode('e').subarray(7)), '{}', 'no payload sends {}');
});

test('encode/decode round trip: unicode event names and every JSON type', () => {
  const names = ['echo', 'test/sub', '', 'é', 'événement/日本語', '🎉 emoji', 'x'.repeat(255), 'ü'.repeat(127)];
  const payloads = [
    {}, [], null, true, false, 0, -1, 3.5, 1e300, -2.5e-10, Number.MAX_SAFE_INTEGER, '', 'text', 'ünïcødé 日本 🎉 \u0000 "quoted" \\ \n',
    { nested: { deep: [1, 'two', null, { three: [true, false] }] }, 'clé 🔑': 'valeur' },
    [[[]], {}, [{}], -0.125],
  ];
  for (const name of names) {
    for (const [i, payload] of payloads.entries()) {
      const type = i % 11;
      const got = decode(encode(name, payload, type));
      assert.deepEqual(got, { type, event: name, payload }, `event ${JSON.stringify(name)} payload ${JSON.stringify(payload)}`);
    }
  }
});

test('decode accepts ArrayBuffer and views, and reads an empty payload as {}', () => {
  const b = encode('e', [1, 2]);
  assert.deepEqual(decode(b.buffer).payload, [1, 2]);
  const padded = new Uint8Array(b.length + 3);
  padded.set(b, 3);
  assert.deepEqual(decode(padded.subarray(3)).payload, [1, 2]);
  assert.deepEqual(decode(new DataView(padded.buffer, 3, b.length)).payload, [1, 2]);
  assert.deepEqual(decode(frame([0, 1, 0x61])), { type: 0, event: 'a', payload: {} });
  assert.deepEqual(decode(frame([7, 0])), { type: 7, event: '', payload: {} });
});

test('encode refuses what the format cannot hold', () => {
  assert.throws(() => encode('x'.repeat(256), {}), /256 bytes; at most 255/);
  assert.throws(() => encode('é'.repeat(128), {}), /256 bytes; at most 255/, 'the limit is bytes, not characters');
  assert.throws(() => encode('e', {}, 256), /event type/);
  assert.throws(() => encode('e', () => {}), /not JSON-serialisable/);
});

test('decode rejects a lying length field', () => {
  const b = encode('echo', { a: 1 });
  for (const declared of [b.length + 1, b.length - 1, 0, 0xffffffff]) {
    const lie = b.slice();
    new DataView(lie.buffer).setUint32(0, declared);
    assert.throws(() => decode(lie), new RegExp(`length field says ${declared} bytes but the message has ${b.length}`));
  }
  assert.throws(() => decode(b.subarray(0, b.length - 1)), /length field says 17 bytes but the message has 16/);
});

test('decode rejects an event name overflow, short frames and bad text', () => {
  const b = encode('echo', {});
  b[5] = 200;
  assert.throws(() => decode(b), /event name length 200 runs past the end of the 12-byte message/);
  assert.throws(() => decode(new Uint8Array([0, 0, 0, 3])), /shorter than the 6-byte header/);
  assert.throws(() => decode(new Uint8Array(0)), /shorter than the 6-byte header/);
  assert.throws(() => decode(frame([0, 1, 0xff, 0x7b, 0x7d])), /not valid UTF-8/);
  assert.throws(() => decode(frame([0, 1, 0x61, 0x22, 0xc3, 0x22])), /not valid UTF-8/);
  assert.throws(() => decode(frame([0, 1, 0x61, ...new TextEncoder().encode('{nope')])), /payload of event "a" is not valid JSON/);
  assert.throws(() => decode('not bytes'), TypeError);
});

const bytes = (...b) => new Uint8Array(b);

test('applySync: no change, growth, shrink', () => {
  const prev = bytes(1, 2, 3, 4);
  assert.deepEqual(applySync(prev, [[0]]), prev);
  assert.notEqual(applySync(prev, [[0]]), prev, 'returns a new array');
  assert.deepEqual(applySync(prev, [[2], [4, 5, 6]]), bytes(1, 2, 3, 4, 5, 6));
  assert.deepEqual(applySync(prev, [[3]]), bytes(1, 2, 3, 4, 0, 0, 0), 'grown bytes are zero');
  assert.deepEqual(applySync(prev, [[2], [1, 9], [5, 8]]), bytes(1, 9, 3, 4, 0, 8));
  assert.deepEqual(applySync(prev, [[-2]]), bytes(1, 2), 'shrink keeps the common prefix');
  assert.deepEqual(applySync(prev, [[-1], [0, 7, 7]]), bytes(7, 7, 3));
  assert.deepEqual(applySync(prev, [[-4]]), bytes());
  assert.deepEqual(applySync(prev, [[0], [4]]), prev, 'an empty run at the end is allowed');
  assert.deepEqual([...prev], [1, 2, 3, 4], 'the input is not modified');
});

test('applySync keeps zero bytes inside runs', () => {
  assert.deepEqual(applySync(bytes(1, 1, 1, 1), [[0], [0, 2, 0, 2]]), bytes(2, 0, 2, 1));
  assert.deepEqual(applySync(bytes(97), [[3], [1, 0, 0, 7]]), bytes(97, 0, 0, 7));
  assert.deepEqual(applySync(bytes(5, 5, 5), [[0], [1, 0]]), bytes(5, 0, 5));
});

test('applySync turns one real message into another', () => {
  const a = encode('sync', { name: 'Ada', age: 0, tags: ['x'] }, EventType.SYNC);
  const b = encode('sync', { name: 'Ada', age: 105, tags: ['x', 'yz'] }, EventType.SYNC);
  const diff = [[b.length - a.length]];
  for (let i = 0; i < b.length; i++) if (b[i] !== (a[i] ?? 0)) diff.push([i, b[i]]);
  assert.deepEqual(decode(applySync(a, diff)).payload, { name: 'Ada', age: 105, tags: ['x', 'yz'] });
});

test('applySync rejects bad input', () => {
  const prev = bytes(1, 2, 3);
  const bad = [
    [undefined, /must be an array/], [{}, /must be an array/], [[], /must be an array/], [[1], /must be an array/],
    [[[]], /must be an array/], [[[1, 2]], /must be an array/], [[['1']], /must be an array/], [[[0.5]], /must be an array/],
    [[[-4]], /length negative/],
    [[[0], 'x'], /run 1 must be/], [[[0], []], /run 1 must be/], [[[0], [-1, 2]], /run 1 must be/], [[[0], [0.5, 2]], /run 1 must be/],
    [[[0], [2, 9, 9]], /run at 2 with 2 bytes does not fit in 3 bytes/],
    [[[-1], [2, 9]], /run at 2 with 1 bytes does not fit in 2 bytes/],
    [[[0], [4]], /run at 4 with 0 bytes does not fit in 3 bytes/],
    [[[0], [0, 256]], /holds 256, not a byte/], [[[0], [0, -1]], /not a byte/], [[[0], [0, 1.5]], /not a byte/], [[[0], [0, '1']], /not a byte/],
  ];
  for (const [diff, re] of bad) assert.throws(() => applySync(prev, diff), re, JSON.stringify(diff));
  assert.throws(() => applySync([1, 2], [[0]]), TypeError);
});

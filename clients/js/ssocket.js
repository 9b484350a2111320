// ssocket client: wire format, SYNC patches and a reconnecting client.
// One dependency-free ES module for browsers and Node 20+ (Node 20 needs
// `--experimental-websocket`, or pass a constructor as option `WebSocket`).

/**
 * Event types (the byte at offset 4 of every message).
 * @readonly
 * @enum {number}
 */
export const EventType = Object.freeze({
  MESSAGE: 0, BROADCAST: 1, AUTH: 2, SYNC: 3, ERROR: 4, NOT_FOUND: 5,
  CUSTOM_1: 6, CUSTOM_2: 7, CUSTOM_3: 8, CUSTOM_4: 9, CUSTOM_5: 10,
  /** Server to client: a tagged request (`name#tag`) has no more replies. */
  END: 11,
});

const HEADER_LEN = 6;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Encode one message: 4-byte big-endian total length (these 4 bytes
 * included), type byte, event-name byte length, UTF-8 event name, JSON payload.
 * @param {string} event event name, at most 255 bytes of UTF-8
 * @param {*} [payload] any JSON-serialisable value (`undefined` sends `{}`)
 * @param {number} [type] an {@link EventType}, default MESSAGE
 * @returns {Uint8Array} the message bytes
 * @throws {Error} if the name is over 255 bytes, the type is not a byte, or the payload is not JSON-serialisable
 */
export function encode(event, payload, type = EventType.MESSAGE) {
  const name = utf8.encode(String(event));
  if (name.length > 255) throw new Error(`ssocket: event name is ${name.length} bytes; at most 255 fit in the format`);
  if (!Number.isInteger(type) || type < 0 || type > 255) throw new Error(`ssocket: event type must be an integer 0..255, got ${type}`);
  const json = JSON.stringify(payload === undefined ? {} : payload);
  if (json === undefined) throw new Error('ssocket: payload is not JSON-serialisable');
  const body = utf8.encode(json);
  const total = HEADER_LEN + name.length + body.length;
  const out = new Uint8Array(total);
  new DataView(out.buffer).setUint32(0, total, false);
  out[4] = type;
  out[5] = name.length;
  out.set(name, HEADER_LEN);
  out.set(body, HEADER_LEN + name.length);
  return out;
}

/**
 * Decode and check one message. An empty payload reads as `{}`.
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} bytes one whole message
 * @returns {{type: number, event: string, payload: *}}
 * @throws {Error} if the length field lies, the event name overflows, or the text is not UTF-8 / JSON
 */
export function decode(bytes) {
  const b = toBytes(bytes);
  if (b.length < HEADER_LEN) throw new Error(`ssocket: message is ${b.length} bytes, shorter than the ${HEADER_LEN}-byte header`);
  const declared = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, false);
  if (declared !== b.length) throw new Error(`ssocket: length field says ${declared} bytes but the message has ${b.length}`);
  const nameEnd = HEADER_LEN + b[5];
  if (nameEnd > b.length) throw new Error(`ssocket: event name length ${b[5]} runs past the end of the ${b.length}-byte message`);
  let event, text;
  try {
    event = strictUtf8.decode(b.subarray(HEADER_LEN, nameEnd));
    text = strictUtf8.decode(b.subarray(nameEnd));
  } catch {
    throw new Error('ssocket: event name or payload is not valid UTF-8');
  }
  let payload;
  try {
    payload = text.trim() === '' ? {} : JSON.parse(text);
  } catch (e) {
    throw new Error(`ssocket: payload of event "${event}" is not valid JSON: ${e.message}`);
  }
  return { type: b[4], event, payload };
}

/**
 * Apply a SYNC difference to the previous full message (SPEC section 5).
 * @param {Uint8Array|ArrayBuffer} previousBytes the full message the diff is relative to
 * @param {Array<number[]>} diff parsed SYNC payload: `[[sizeDelta], [start, b0, b1, ...], ...]`
 * @returns {Uint8Array} the new full message (a fresh array; the input is not modified)
 * @throws {Error} on a malformed diff, a negative size or a run out of bounds
 */
export function applySync(previousBytes, diff) {
  const prev = toBytes(previousBytes);
  const isInt = (n) => Number.isSafeInteger(n);
  if (!Array.isArray(diff) || !Array.isArray(diff[0]) || diff[0].length !== 1 || !isInt(diff[0][0])) {
    throw new Error('ssocket: SYNC diff must be an array starting with [sizeDelta]');
  }
  const size = prev.length + diff[0][0];
  if (size < 0) throw new Error(`ssocket: SYNC diff makes the message length negative (${size})`);
  const out = new Uint8Array(size); // new bytes are zero
  out.set(prev.subarray(0, Math.min(prev.length, size)));
  for (let r = 1; r < diff.length; r++) {
    const run = diff[r];
    if (!Array.isArray(run) || run.length < 1 || !isInt(run[0]) || run[0] < 0) {
      throw new Error(`ssocket: SYNC run ${r} must be [start, byte, ...] with a non-negative integer start`);
    }
    const start = run[0];
    if (start + run.length - 1 > size) {
      throw new Error(`ssocket: SYNC run at ${start} with ${run.length - 1} bytes does not fit in ${size} bytes`);
    }
    for (let i = 1; i < run.length; i++) {
      const v = run[i];
      if (!Number.isInteger(v) || v < 0 || v > 255) throw new Error(`ssocket: SYNC run ${r} holds ${v}, not a byte`);
      out[start + i - 1] = v;
    }
  }
  return out;
}

// An ERROR message as an Error: `code` is its `error`, `payload` all of it.
function serverError(msg) {
  const p = msg.payload && typeof msg.payload === 'object' ? msg.payload : {};
  return Object.assign(new Error(p.message || `ERROR from the server for "${msg.event}"`), { code: p.error || 'error', event: msg.event, payload: msg.payload });
}

function toBytes(x) {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  throw new TypeError('ssocket: expected a Uint8Array, ArrayBuffer or ArrayBufferView');
}

/**
 * A WebSocket client for an ssocket server.
 *
 * - `send` throws when the socket is not open: `await client.ready` first.
 * - `on(event, fn)` gets replies of that event except ERROR and NOT_FOUND;
 *   `on('*', fn)` gets every message (ERROR and NOT_FOUND included).
 * - `onError(fn)`: ERROR messages and client-side failures; `onNotFound(fn)`:
 *   NOT_FOUND replies; `onOpen(fn)` / `onClose(fn)`: connection changes.
 * - SYNC replies are patched onto the last full message of their event and
 *   handlers receive the full payload (meta.type = SYNC).
 * - `request` and `stream` tag a message (`event#tag`) so its replies can be
 *   told apart from any other's, even with many in flight.
 */
export class SsocketClient {
  /**
   * @param {string} url e.g. `ws://localhost:8080/`
   * @param {object} [options]
   * @param {boolean|{minDelay?: number, maxDelay?: number}} [options.reconnect=false] reconnect after an unexpected close, with exponential backoff and jitter (defaults: 250 ms, 10000 ms)
   * @param {typeof WebSocket} [options.WebSocket] constructor to use instead of the global `WebSocket`
   * @param {string|string[]} [options.protocols] WebSocket subprotocols
   */
  constructor(url, options = {}) {
    this.url = url;
    this._WS = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new Error('ssocket: no WebSocket: pass options.WebSocket, or run Node 20 with --experimental-websocket (Node 22+ has it built in)');
    }
    const rc = options.reconnect;
    this._reconnect = rc ? { minDelay: 250, maxDelay: 10000, ...(rc === true ? {} : rc) } : null;
    this._protocols = options.protocols;
    this._handlers = new Map(); // event or '*' -> Set of handlers
    this._listeners = { error: new Set(), notFound: new Set(), open: new Set(), close: new Set() };
    this._bases = new Map(); // event -> last full message bytes (SYNC base)
    this._tagged = new Map(); // 'event#tag' -> receiver of that request's messages
    this._nextTag = 1;
    this._attempt = 0;
    this._closed = false;
    this._timer = null;
    this._ws = null;
    this._pendingReady();
    this._connect(true);
  }

  /** @returns {boolean} true while the socket is open */
  get connected() { return !!this._ws && this._ws.readyState === 1; }

  /**
   * Send a message. Its exact bytes become the SYNC base of `event`.
   * @param {string} event
   * @param {*} [payload]
   * @param {number} [type=EventType.MESSAGE]
   * @throws {Error} if the socket is not open (await `ready` first) or the message cannot be encoded
   */
  send(event, payload, type = EventType.MESSAGE) {
    if (!this.connected) {
      throw new Error(`ssocket: cannot send "${event}": not connected${this._closed ? ' (client closed)' : '; await client.ready first'}`);
    }
    const bytes = encode(event, payload, type);
    this._bases.set(String(event), bytes);
    this._ws.send(bytes);
  }

  /**
   * Send a request and wait for its first reply (SPEC 10.3). The message
   * goes out tagged (`event#tag`), so the reply is this request's even with
   * others of the same event in flight.
   * @param {string} event the plug's event (without a tag)
   * @param {*} [payload]
   * @param {{timeoutMs?: number, type?: number}} [options] timeoutMs default 10000
   * @returns {Promise<*>} the first reply's payload; `undefined` if the plug ended without replying
   * @throws rejects with `err.code`: the ERROR's code (`err.payload` has it whole), 'not_found', 'timeout' or 'closed'
   */
  request(event, payload, options = {}) {
    const { timeoutMs = 10000, type = EventType.MESSAGE } = options;
    return new Promise((resolve, reject) => {
      let timer;
      const tagged = this._open(event, payload, type, (msg, err) => {
        clearTimeout(timer);
        this._tagged.delete(tagged);
        if (err) reject(err);
        else resolve(msg && msg.type !== EventType.END ? msg.payload : undefined);
      });
      timer = setTimeout(() => {
        this._tagged.delete(tagged);
        reject(Object.assign(new Error(`ssocket: no reply to "${event}" within ${timeoutMs} ms`), { code: 'timeout', event: tagged }));
      }, timeoutMs);
    });
  }

  /**
   * Send a request and iterate over all its replies, until the plug ends.
   * `for await (const payload of client.stream('feed', {}))`.
   * @param {string} event the plug's event (without a tag)
   * @param {*} [payload]
   * @param {{timeoutMs?: number, type?: number}} [options] timeoutMs: the longest wait for each next reply (default: none)
   * @returns {AsyncIterableIterator<*>} the replies' payloads
   * @throws the iteration throws as {@link SsocketClient#request} rejects
   */
  stream(event, payload, options = {}) {
    const { timeoutMs, type = EventType.MESSAGE } = options;
    const queue = []; // {payload} | {err} | {done}
    let wake = null;
    let finished = false;
    const push = (item) => { queue.push(item); if (wake) { wake(); wake = null; } };
    const tagged = this._open(event, payload, type, (msg, err) => {
      if (err) push({ err });
      else if (msg.type === EventType.END) push({ done: true });
      else { push({ payload: msg.payload }); return true; } // keep listening
      this._tagged.delete(tagged);
      return false;
    });
    const stop = () => { finished = true; this._tagged.delete(tagged); };
    return {
      [Symbol.asyncIterator]() { return this; },
      next: async () => {
        if (finished) return { done: true, value: undefined };
        while (queue.length === 0) {
          let timer;
          const waited = new Promise((r) => { wake = r; });
          if (timeoutMs !== undefined) {
            timer = setTimeout(() => push({ err: Object.assign(new Error(`ssocket: no reply to "${event}" within ${timeoutMs} ms`), { code: 'timeout', event: tagged }) }), timeoutMs);
          }
          await waited;
          clearTimeout(timer);
        }
        const item = queue.shift();
        if (item.err) { stop(); throw item.err; }
        if (item.done) { stop(); return { done: true, value: undefined }; }
        return { done: false, value: item.payload };
      },
      return: async () => { stop(); return { done: true, value: undefined }; },
    };
  }

  // Send `event` tagged and route its messages to `receive(msg, err)`,
  // which returns true to keep receiving. Returns the tagged event name.
  _open(event, payload, type, receive) {
    const tagged = `${event}#${(this._nextTag++).toString(36)}`;
    this._tagged.set(tagged, receive);
    try {
      this.send(tagged, payload, type);
    } catch (e) {
      this._tagged.delete(tagged);
      throw e;
    }
    return tagged;
  }

  /**
   * Listen to messages of one event (`'*'`: every message).
   * @param {string} event
   * @param {(payload: *, meta: {type: number, event: string}) => void} handler
   * @returns {() => void} a function that removes the handler
   */
  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  /**
   * Remove a handler added with {@link SsocketClient#on}.
   * @param {string} event
   * @param {Function} handler
   */
  off(event, handler) {
    const set = this._handlers.get(event);
    if (set && set.delete(handler) && set.size === 0) this._handlers.delete(event);
  }

  /**
   * Errors: ERROR messages from the server (`err.code` = payload.error,
   * `err.event`, `err.payload`) and client-side failures (`err.code` =
   * 'bad_message', 'sync_failed', 'handler_failed', or 'socket' when a
   * reconnect cannot even create a WebSocket). While no error
   * handler is registered they are logged with console.warn.
   * @param {(err: Error & {code: string, event?: string, payload?: *}) => void} handler
   * @returns {() => void} remover
   */
  onError(handler) { return this._sub('error', handler); }
  /** @param {(event: string) => void} handler called with an event name that has no plug @returns {() => void} remover */
  onNotFound(handler) { return this._sub('notFound', handler); }
  /** @param {() => void} handler called on every (re)connect @returns {() => void} remover */
  onOpen(handler) { return this._sub('open', handler); }
  /** @param {(info: {code: number, reason: string, willReconnect: boolean}) => void} handler called on every close and every failed connection attempt @returns {() => void} remover */
  onClose(handler) { return this._sub('close', handler); }

  /**
   * Close for good: no reconnect, and `ready` rejects from now on.
   * @param {number} [code=1000]
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(code, reason);
    this._failedReady(new Error('ssocket: client closed'));
  }

  // `ready`: pending while connecting, resolved while open, rejected when
  // no further connection will be tried.
  _pendingReady() {
    this._ready = {};
    this.ready = new Promise((resolve, reject) => Object.assign(this._ready, { resolve, reject }));
    this.ready.catch(() => {}); // an unawaited rejection must not crash Node
  }

  _failedReady(err) {
    if (this._ready.settled) this._pendingReady();
    this._ready.settled = true;
    this._ready.reject(err);
  }

  _sub(kind, handler) {
    this._listeners[kind].add(handler);
    return () => this._listeners[kind].delete(handler);
  }

  _emit(kind, arg) {
    for (const h of [...this._listeners[kind]]) {
      try { h(arg); } catch (e) { if (kind !== 'error') this._error('handler_failed', e); }
    }
  }

  _error(code, cause, extra = {}) {
    const err = Object.assign(new Error(cause.message || String(cause)), { code, cause }, extra);
    if (this._listeners.error.size === 0) console.warn(`ssocket: ${code}: ${err.message}`);
    this._emit('error', err);
  }

  _connect(first = false) {
    let ws;
    try {
      ws = this._protocols ? new this._WS(this.url, this._protocols) : new this._WS(this.url);
    } catch (e) {
      if (first) throw e; // a bad URL, say: tell the caller at once
      this._closed = true;
      this._failedReady(e);
      return this._error('socket', e);
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._attempt = 0;
      this._ready.settled = true;
      this._ready.resolve();
      this._emit('open');
    };
    ws.onmessage = (e) => { if (this._ws === ws && !this._closed) this._receive(e.data); };
    // Browsers fire close after error; Node 20's WebSocket fires only error
    // when it cannot connect. Whichever comes first ends this socket.
    ws.onerror = () => {
      this._lost(ws, 1006, 'connection error');
      try { ws.close(); } catch { /* already closing */ }
    };
    ws.onclose = (e) => this._lost(ws, e.code, e.reason);
  }

  _lost(ws, code, reason) {
    if (this._ws !== ws) return;
    this._ws = null;
    this._bases.clear(); // the server's invocations ended with the connection
    for (const [tagged, receive] of [...this._tagged]) {
      this._tagged.delete(tagged);
      receive(null, Object.assign(new Error(`ssocket: connection closed before "${tagged}" finished`), { code: 'closed', event: tagged }));
    }
    const willReconnect = !this._closed && !!this._reconnect;
    if (willReconnect) {
      if (this._ready.settled) this._pendingReady();
      this._schedule();
    } else if (!this._closed) {
      this._closed = true;
      this._failedReady(new Error(`ssocket: connection to ${this.url} closed (code ${code})`));
    }
    this._emit('close', { code, reason, willReconnect });
  }

  _schedule() {
    const { minDelay, maxDelay } = this._reconnect;
    const ceiling = Math.min(maxDelay, minDelay * 2 ** this._attempt++);
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2; // jitter: 50..100 % of the ceiling
    this._timer = setTimeout(() => { if (!this._closed) this._connect(); }, delay);
  }

  _receive(data) {
    if (typeof data === 'string') return this._error('bad_message', new Error('text frame received; ssocket uses binary frames'));
    if (typeof Blob !== 'undefined' && data instanceof Blob) {
      return void data.arrayBuffer().then((b) => this._receive(b)); // only if someone reset binaryType
    }
    let msg;
    try {
      msg = decode(data);
      if (msg.type === EventType.SYNC) {
        const base = this._bases.get(msg.event);
        if (!base) throw new Error('no message of that event was sent on this connection');
        const full = applySync(base, msg.payload);
        const fullMsg = decode(full);
        this._bases.set(msg.event, full);
        msg = fullMsg;
      }
    } catch (e) {
      if (!msg) return this._error('bad_message', e);
      this._bases.delete(msg.event); // later diffs of this stream cannot apply either
      return this._error('sync_failed', new Error(`ssocket: cannot apply SYNC for "${msg.event}": ${e.message}`), { event: msg.event });
    }
    const meta = { type: msg.type, event: msg.event };
    const request = this._tagged.get(msg.event);
    if (request) {
      const err = msg.type === EventType.ERROR ? serverError(msg)
        : msg.type === EventType.NOT_FOUND ? Object.assign(new Error(`ssocket: no plug answers "${msg.event}"`), { code: 'not_found', event: msg.event })
          : null;
      if (!request(msg, err)) this._tagged.delete(msg.event);
      return this._dispatch(this._handlers.get('*'), msg.payload, meta);
    }
    // The END of a request nobody waits for (any more): only '*' sees it.
    if (msg.type === EventType.END) return this._dispatch(this._handlers.get('*'), msg.payload, meta);
    if (msg.type === EventType.ERROR) {
      const err = serverError(msg);
      if (this._listeners.error.size === 0) console.warn(`ssocket: ${err.code}: ${err.message}`);
      this._emit('error', err);
    } else if (msg.type === EventType.NOT_FOUND) {
      this._emit('notFound', msg.event);
    } else {
      this._dispatch(this._handlers.get(msg.event), msg.payload, meta);
    }
    this._dispatch(this._handlers.get('*'), msg.payload, meta);
  }

  _dispatch(set, payload, meta) {
    if (!set) return;
    for (const h of [...set]) {
      try { h(payload, meta); } catch (e) { this._error('handler_failed', e, { event: meta.event }); }
    }
  }
}

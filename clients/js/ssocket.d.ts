// Type declarations for ssocket.js, the ssocket client library.

/** Event types: the byte at offset 4 of every message. */
export declare const EventType: Readonly<{
  MESSAGE: 0;
  BROADCAST: 1;
  AUTH: 2;
  SYNC: 3;
  ERROR: 4;
  NOT_FOUND: 5;
  CUSTOM_1: 6;
  CUSTOM_2: 7;
  CUSTOM_3: 8;
  CUSTOM_4: 9;
  CUSTOM_5: 10;
  /** Server to client: a tagged request (`name#tag`) has no more replies. */
  END: 11;
}>;

/** One of the named event types (any byte 0..255 may appear on the wire). */
export type EventTypeValue = (typeof EventType)[keyof typeof EventType];

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Bytes accepted by `decode` and `applySync`. */
export type BytesLike = Uint8Array | ArrayBuffer | ArrayBufferView;

/** A decoded message. */
export interface Message<P = any> {
  type: number;
  event: string;
  payload: P;
}

/**
 * A SYNC difference: `[[sizeDelta], [start, b0, b1, ...], ...]`.
 * Typed loosely because it comes straight from `JSON.parse`.
 */
export type SyncDiff = number[][];

/**
 * Encode one message. Throws if the event name is over 255 UTF-8 bytes, the
 * type is not an integer 0..255, or the payload is not JSON-serialisable.
 * An `undefined` payload is sent as `{}`.
 */
export declare function encode(event: string, payload?: unknown, type?: number): Uint8Array;

/**
 * Decode and check one message (length field, event length, UTF-8, JSON).
 * An empty payload reads as `{}`. Throws an Error saying what is wrong.
 */
export declare function decode<P = any>(bytes: BytesLike): Message<P>;

/**
 * Apply a SYNC difference to the previous full message and return the new
 * full message (a new array). Throws on a malformed diff, a negative size or
 * a run out of bounds.
 */
export declare function applySync(previousBytes: BytesLike, diff: SyncDiff): Uint8Array;

/** Passed to message handlers alongside the payload. */
export interface MessageMeta {
  /** The message's type; SYNC for reconstructed SYNC replies. */
  type: number;
  event: string;
}

export type MessageHandler<P = any> = (payload: P, meta: MessageMeta) => void;

/** An error given to `onError` handlers. */
export interface SsocketError extends Error {
  /**
   * For ERROR messages: the server's `error` field (e.g. `bad_frame`,
   * `payload_too_large`, `script_error`). Client-side: `bad_message`,
   * `sync_failed`, `handler_failed` or `socket`; from `request` and
   * `stream` also `not_found`, `timeout` and `closed`.
   */
  code: string;
  /** The event the error is about, when known. */
  event?: string;
  /** The ERROR message's payload (`{error, message, ...}`), for server errors. */
  payload?: any;
  cause?: unknown;
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** True when the client will try to reconnect. */
  willReconnect: boolean;
}

export interface ReconnectOptions {
  /** First delay in ms (default 250); doubles after each failed attempt. */
  minDelay?: number;
  /** Largest delay in ms (default 10000). Each wait is 50..100 % of the current delay. */
  maxDelay?: number;
}

/** The subset of the WebSocket constructor the client uses. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface RequestOptions {
  /**
   * `request`: how long to wait for the first reply (default 10000 ms).
   * `stream`: how long to wait for each next reply (default: no limit).
   */
  timeoutMs?: number;
  /** The request's type byte (default MESSAGE). */
  type?: number;
}

export interface SsocketClientOptions {
  /** Reconnect after an unexpected close, with exponential backoff and jitter. Default false. */
  reconnect?: boolean | ReconnectOptions;
  /** WebSocket constructor to use instead of the global `WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** WebSocket subprotocols. */
  protocols?: string | string[];
}

/** A WebSocket client for an ssocket server. */
export declare class SsocketClient {
  constructor(url: string, options?: SsocketClientOptions);

  readonly url: string;

  /**
   * Resolves when the current connection is open. After a drop with
   * reconnect on, it is replaced by a new pending promise; once no further
   * connection will be tried (close(), or a drop without reconnect) it rejects.
   */
  readonly ready: Promise<void>;

  /** True while the socket is open. */
  readonly connected: boolean;

  /**
   * Send a message; its exact bytes become the SYNC base of `event`.
   * Throws if not connected (await `ready` first) or the message cannot be encoded.
   */
  send(event: string, payload?: unknown, type?: number): void;

  /**
   * Send a tagged request (`event#tag`) and resolve with its first reply's
   * payload, or `undefined` if the plug ended without replying. Rejects
   * with an `SsocketError` whose `code` is the ERROR's code, `not_found`,
   * `timeout` or `closed`. Throws at once if not connected.
   */
  request<P = any>(event: string, payload?: unknown, options?: RequestOptions): Promise<P | undefined>;

  /**
   * Send a tagged request and iterate over every reply's payload until the
   * plug ends: `for await (const p of client.stream('feed'))`. The
   * iteration throws as `request` rejects; breaking out stops listening.
   */
  stream<P = any>(event: string, payload?: unknown, options?: RequestOptions): AsyncIterableIterator<P>;

  /**
   * Handle messages of `event` (not ERROR or NOT_FOUND ones); `'*'` handles
   * every message. Returns a function that removes the handler.
   */
  on<P = any>(event: string, handler: MessageHandler<P>): () => void;

  /** Remove a handler added with `on`. */
  off(event: string, handler: MessageHandler<any>): void;

  /** ERROR messages and client-side failures. Returns a remover. */
  onError(handler: (err: SsocketError) => void): () => void;

  /** NOT_FOUND replies: called with the event that has no plug. Returns a remover. */
  onNotFound(handler: (event: string) => void): () => void;

  /** Called on every (re)connect. Returns a remover. */
  onOpen(handler: () => void): () => void;

  /** Called on every close or failed connection attempt. Returns a remover. */
  onClose(handler: (info: CloseInfo) => void): () => void;

  /** Close for good: no reconnect; `ready` rejects from now on. */
  close(code?: number, reason?: string): void;
}

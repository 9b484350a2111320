// Bun peer of ssocket's wire protocol (SPEC.md section 2), using Bun.serve
// websockets as a user would. "echo" replies MESSAGE with the same event and
// payload; "broadcast" sends the payload as BROADCAST to every other client,
// encoded once per broadcast; any other event gets NOT_FOUND, as in ssocket
// (Bun's pub/sub: publish() skips the sender).
// Usage: bun server.ts [PORT] (or env PORT).
const MESSAGE = 0, BROADCAST = 1, ERROR = 4, NOT_FOUND = 5;
const port = Number(Bun.argv[2] ?? process.env.PORT ?? 8080);
const utf8 = new TextDecoder("utf-8", { fatal: true });
const enc = new TextEncoder();

function encode(type: number, event: string, payload: string): Uint8Array {
  const ev = enc.encode(event);
  const body = enc.encode(payload);
  const out = new Uint8Array(6 + ev.length + body.length);
  new DataView(out.buffer).setUint32(0, out.length);
  out[4] = type;
  out[5] = ev.length;
  out.set(ev, 6);
  out.set(body, 6 + ev.length);
  return out;
}

function decode(buf: Uint8Array): { event: string; payload: unknown } {
  if (buf.length < 6) throw new Error("short");
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (view.getUint32(0) !== buf.length) throw new Error("length");
  const n = buf[5];
  if (6 + n > buf.length) throw new Error("event length");
  const event = utf8.decode(buf.subarray(6, 6 + n));
  const payload = JSON.parse(utf8.decode(buf.subarray(6 + n)));
  return { event, payload };
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("websocket only", { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      ws.subscribe("all");
    },
    message(ws, data) {
      if (typeof data === "string") return;
      let msg;
      try {
        msg = decode(data);
      } catch (err) {
        ws.send(encode(ERROR, "error", JSON.stringify({ error: (err as Error).message })));
        return;
      }
      if (msg.event === "echo") {
        ws.send(encode(MESSAGE, msg.event, JSON.stringify(msg.payload)));
      } else if (msg.event === "broadcast") {
        ws.publish("all", encode(BROADCAST, msg.event, JSON.stringify(msg.payload)));
      } else {
        ws.send(encode(NOT_FOUND, msg.event, "{}"));
      }
    },
  },
});
console.error(`listening on ws://127.0.0.1:${server.port}/`);

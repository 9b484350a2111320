// Node + ws peer of ssocket's wire protocol (SPEC.md section 2), written the
// way a user would write it. "echo" replies MESSAGE with the same event and
// payload; "broadcast" sends the payload as BROADCAST to every other client,
// encoded once per broadcast; any other event gets NOT_FOUND, as in ssocket.
// Usage: node server.mjs [PORT] (or env PORT).
// Needs the npm package `ws`: bench/run.sh installs it outside the repo and
// points BENCH_NODE_MODULES at that node_modules folder.
import { createRequire } from "node:module";
import path from "node:path";

const scratch = process.env.BENCH_NODE_MODULES;
const require = createRequire(scratch ? path.join(scratch, "noop.js") : import.meta.url);
const { WebSocketServer } = require("ws");

const MESSAGE = 0, BROADCAST = 1, ERROR = 4, NOT_FOUND = 5;
const port = Number(process.argv[2] ?? process.env.PORT ?? 8080);

function encode(type, event, payload) {
  const ev = Buffer.from(event, "utf8");
  const body = Buffer.from(payload, "utf8");
  const out = Buffer.allocUnsafe(6 + ev.length + body.length);
  out.writeUInt32BE(out.length, 0);
  out[4] = type;
  out[5] = ev.length;
  ev.copy(out, 6);
  body.copy(out, 6 + ev.length);
  return out;
}

function decode(buf) {
  if (buf.length < 6) throw new Error("short");
  if (buf.readUInt32BE(0) !== buf.length) throw new Error("length");
  const n = buf[5];
  if (6 + n > buf.length) throw new Error("event length");
  const event = new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(6, 6 + n));
  const payload = JSON.parse(buf.toString("utf8", 6 + n));
  return { event, payload };
}

const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("listening", () => console.error(`listening on ws://127.0.0.1:${port}/`));
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (!isBinary) return;
    let msg;
    try {
      msg = decode(data);
    } catch (err) {
      ws.send(encode(ERROR, "error", JSON.stringify({ error: err.message })));
      return;
    }
    if (msg.event === "echo") {
      ws.send(encode(MESSAGE, msg.event, JSON.stringify(msg.payload)));
    } else if (msg.event === "broadcast") {
      const out = encode(BROADCAST, msg.event, JSON.stringify(msg.payload));
      for (const client of wss.clients) {
        if (client !== ws && client.readyState === 1) client.send(out);
      }
    } else {
      ws.send(encode(NOT_FOUND, msg.event, "{}"));
    }
  });
});

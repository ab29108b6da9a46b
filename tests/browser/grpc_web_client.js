// A page script that calls the demo services through Portico with the stock
// grpc-web client library (the one protoc-gen-grpc-web's code uses), in both
// wire formats. Messages are encoded by hand so no generated code is needed.
// Results go into <pre id="result"> as JSON for the test to read.
import { GrpcWebClientBase, MethodDescriptor, MethodType } from "grpc-web";

const utf8 = new TextEncoder();
const text = new TextDecoder();

function varint(n) {
  const out = [];
  while (n > 127) { out.push((n & 127) | 128); n = Math.floor(n / 128); }
  out.push(n);
  return out;
}

function stringField(tag, s) {
  const b = utf8.encode(s);
  return [(tag << 3) | 2, ...varint(b.length), ...b];
}

// Reads a message's fields: number -> string (length-delimited) or number (varint).
function readFields(bytes) {
  const fields = {};
  let i = 0;
  const readVarint = () => { let n = 0, m = 1, b; do { b = bytes[i++]; n += (b & 127) * m; m *= 128; } while (b & 128); return n; };
  while (i < bytes.length) {
    const key = readVarint();
    const tag = Math.floor(key / 8), wire = key & 7;
    if (wire === 0) fields[tag] = readVarint();
    else if (wire === 2) { const len = readVarint(); fields[tag] = text.decode(bytes.subarray(i, i + len)); i += len; }
    else throw new Error("unexpected wire type " + wire);
  }
  return fields;
}

const getShelf = new MethodDescriptor(
  "/portico.demo.v1.Library/GetShelf", MethodType.UNARY, Object, Object,
  (req) => new Uint8Array(stringField(1, req.shelf)),
  (bytes) => { const f = readFields(bytes); return { name: f[1], theme: f[2], bookCount: f[3] || 0 }; },
);

const watch = new MethodDescriptor(
  "/portico.demo.v1.Feed/Watch", MethodType.SERVER_STREAMING, Object, Object,
  (req) => new Uint8Array([8, ...varint(req.count), ...stringField(4, req.topic)]),
  (bytes) => { const f = readFields(bytes); return { seq: f[1], topic: f[2] }; },
);

const gateway = new URLSearchParams(location.search).get("gw");

function unary(format, shelf) {
  const client = new GrpcWebClientBase({ format });
  return new Promise((resolve) => {
    client.rpcCall(gateway + getShelf.name, { shelf }, {}, getShelf, (err, resp) =>
      resolve(err ? { code: err.code, message: err.message } : resp));
  });
}

function stream(format) {
  const client = new GrpcWebClientBase({ format });
  return new Promise((resolve) => {
    const events = [];
    const call = client.serverStreaming(gateway + watch.name, { count: 3, topic: "browser" }, {}, watch);
    call.on("data", (e) => events.push(e));
    call.on("error", (err) => resolve({ events, error: { code: err.code, message: err.message } }));
    call.on("end", () => resolve({ events }));
  });
}

(async () => {
  const result = {};
  try {
    result.textUnary = await unary("text", "1");
    result.binaryUnary = await unary("binary", "2");
    result.notFound = await unary("text", "9");
    result.textStream = await stream("text");
  } catch (e) {
    result.exception = String(e);
  }
  document.getElementById("result").textContent = JSON.stringify(result);
  document.title = "done";
})();

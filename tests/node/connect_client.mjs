// The official Connect SDK for TypeScript (connect-es) calling the demo
// services through the gateway, once per transport it offers: Connect
// (JSON and protobuf, HTTP/1.1 and HTTP/2, POST and GET), gRPC and
// gRPC-Web. The services come from a descriptor set read at run time, as a
// client without generated code builds them.
//
// usage: node connect_client.mjs BASE_URL DESCRIPTOR_SET
// Prints one JSON object: {transport: {case: outcome}}. Every outcome is
// data (a reply or an error's code, message, details and metadata), so the
// test that runs this decides what is right.

import { readFileSync } from "node:fs";
import http from "node:http";
import { createFileRegistry, fromBinary, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

const [baseUrl, descriptorSet] = process.argv.slice(2);
const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSet)),
);
const service = (name) => registry.getService(`portico.demo.v1.${name}`);
const errorInfo = registry.getMessage("google.rpc.ErrorInfo");

// The HTTP/1.1 transports count the HTTP methods of the requests they
// send (the SDK turns a POST into a GET below its interceptors), so a case
// can say whether a Connect GET was used.
function transports() {
  const seen = [];
  // `addRequest` is Node's (undocumented) hook through which every request
  // of an agent passes; a Node upgrade that breaks this count starts here.
  class Recording extends http.Agent {
    addRequest(req, options) {
      seen.push(req.method);
      return super.addRequest(req, options);
    }
  }
  const common = { baseUrl };
  const h1 = { ...common, httpVersion: "1.1", nodeOptions: { agent: new Recording({ keepAlive: true }) } };
  // connect-node sends protobuf unless told otherwise.
  const asJson = { useBinaryFormat: false };
  return {
    seen,
    all: {
      "connect-json-h1": createConnectTransport({ ...h1, ...asJson }),
      "connect-json-h2": createConnectTransport({ ...common, ...asJson, httpVersion: "2" }),
      "connect-proto-h2": createConnectTransport({
        ...common,
        httpVersion: "2",
        useBinaryFormat: true,
      }),
      "connect-get-h1": createConnectTransport({ ...h1, ...asJson, useHttpGet: true }),
      grpc: createGrpcTransport({ ...common }),
      "grpc-web-h1": createGrpcWebTransport({ ...h1 }),
      "grpc-web-h2": createGrpcWebTransport({ ...common, httpVersion: "2" }),
    },
    // The same transports compressing every request message (a threshold
    // of 0 bytes), which the gateway does not take.
    compressing: {
      "connect-json-h2": createConnectTransport({
        ...common,
        ...asJson,
        httpVersion: "2",
        sendCompression: compressionGzip,
        compressMinBytes: 0,
      }),
      grpc: createGrpcTransport({
        ...common,
        sendCompression: compressionGzip,
        compressMinBytes: 0,
      }),
      "grpc-web-h2": createGrpcWebTransport({
        ...common,
        httpVersion: "2",
        sendCompression: compressionGzip,
        compressMinBytes: 0,
      }),
    },
  };
}

function failure(err) {
  const e = ConnectError.from(err);
  const metadata = {};
  e.metadata.forEach((value, key) => {
    metadata[key] = value;
  });
  return {
    error: {
      code: Code[e.code],
      message: e.rawMessage,
      details: e.findDetails(errorInfo).map((d) => toJson(errorInfo, d)),
      metadata,
    },
  };
}

async function outcome(run) {
  try {
    return await run();
  } catch (err) {
    return failure(err);
  }
}

const json = (schema, message) => toJson(schema, message);

async function everyKindOfCall(transport, http2) {
  const Library = service("Library");
  const Probe = service("Probe");
  const Feed = service("Feed");
  const Chat = service("Chat");
  const library = createClient(Library, transport);
  const probe = createClient(Probe, transport);
  const feed = createClient(Feed, transport);
  const chat = createClient(Chat, transport);
  const cases = {};

  cases.getShelf = await outcome(async () => ({
    reply: json(Library.method.getShelf.output, await library.getShelf({ shelf: "1" })),
  }));
  cases.notFound = await outcome(async () => ({
    reply: json(Library.method.getShelf.output, await library.getShelf({ shelf: "9" })),
  }));
  cases.fail = await outcome(async () => {
    await probe.fail({ code: 7, message: "no entry" });
    return { reply: "none" };
  });
  cases.headers = await outcome(async () => {
    const replyHeaders = {};
    const res = await probe.headers(
      {},
      {
        headers: { "x-team": "books", "x-reply-x-answer": "forty-two" },
        onHeader: (h) => h.forEach((v, k) => (replyHeaders[k] = v)),
      },
    );
    return {
      sent: res.metadata["x-team"] ?? null,
      answered: replyHeaders["x-answer"] ?? null,
    };
  });
  cases.deadline = await outcome(async () => {
    await probe.sleep({ millis: 3000n }, { timeoutMs: 300 });
    return { reply: "in time" };
  });
  cases.watch = await outcome(async () => {
    const seqs = [];
    for await (const event of feed.watch({ count: 3 })) seqs.push(Number(event.seq));
    return { seqs };
  });
  cases.watchFails = await outcome(async () => {
    const seqs = [];
    try {
      for await (const event of feed.watch({ count: 5, failAfter: 2 })) {
        seqs.push(Number(event.seq));
      }
    } catch (err) {
      return { seqs, ...failure(err) };
    }
    return { seqs };
  });
  cases.watchCancelled = await outcome(async () => {
    const abort = new AbortController();
    const seqs = [];
    try {
      for await (const event of feed.watch(
        { count: 50, intervalMs: 100 },
        { signal: abort.signal },
      )) {
        seqs.push(Number(event.seq));
        if (seqs.length === 2) abort.abort();
      }
    } catch (err) {
      return { seqs, ...failure(err) };
    }
    return { seqs };
  });
  cases.upload = await outcome(async () => {
    async function* events() {
      for (const seq of [1n, 2n, 3n]) yield { seq, topic: seq === 2n ? "b" : "a" };
    }
    return { reply: json(Feed.method.upload.output, await feed.upload(events())) };
  });
  // A bidirectional stream needs HTTP/2: over HTTP/1.1 a request is sent
  // whole before its reply is read.
  if (http2) {
    cases.converse = await outcome(async () => {
      const texts = [];
      async function* say() {
        yield { user: "ada", text: "hello" };
        // The room echoes each message; the second goes once the first is back.
        while (texts.length < 1) await new Promise((r) => setTimeout(r, 10));
        yield { user: "ada", text: "again" };
      }
      for await (const m of chat.converse(say())) {
        texts.push(m.text);
        if (texts.length === 2) break;
      }
      return { texts };
    });
  }
  return cases;
}

async function compressedCases(transport) {
  const Library = service("Library");
  const library = createClient(Library, transport);
  return {
    getShelf: await outcome(async () => ({
      reply: json(Library.method.getShelf.output, await library.getShelf({ shelf: "1" })),
    })),
  };
}

const { seen, all, compressing } = transports();
const result = {};
for (const [name, transport] of Object.entries(all)) {
  const start = seen.length;
  result[name] = await everyKindOfCall(transport, !name.endsWith("-h1"));
  if (name.endsWith("-h1")) result[name].methods = [...new Set(seen.slice(start))];
}
result.compressed = {};
for (const [name, transport] of Object.entries(compressing)) {
  result.compressed[name] = await compressedCases(transport);
}
// The HTTP/2 sessions the transports keep open would hold the process for
// their idle timeout; the results are all in.
process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));

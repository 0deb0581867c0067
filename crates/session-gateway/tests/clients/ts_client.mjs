// The official MCP TypeScript SDK (npm `@modelcontextprotocol/sdk`) against
// session-gateway. Run by tests/official_clients.rs as
//
//     node ts_client.mjs --modules DIR --url URL --token TOKEN --other-token TOKEN
//
// with DIR the node_modules that holds the SDK (xtask installs it under the
// target directory, outside this script's tree, so the SDK is imported by
// path). The SDK speaks the handshake-era revisions: it counts with the
// session-scoped `counter` and with a handle, checks that another principal
// sees nothing of either, and ends the session with the SDK's DELETE. It
// prints one JSON object per line, one per step, and exits non-zero if a
// step threw; the Rust test judges the figures.

import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const { values: args } = parseArgs({
  options: {
    modules: { type: "string" },
    url: { type: "string" },
    token: { type: "string" },
    "other-token": { type: "string" },
  },
});

const sdk = (path) =>
  import(pathToFileURL(join(args.modules, "@modelcontextprotocol/sdk/dist/esm", path)).href);
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

function say(step, fields = {}) {
  console.log(JSON.stringify({ step, ...fields }));
}

async function connect(token) {
  const transport = new StreamableHTTPClientTransport(new URL(args.url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "session-gateway-ts-test", version: "0" });
  await client.connect(transport);
  return { client, transport };
}

function textOf(result) {
  return result.content?.[0]?.text ?? "";
}

async function call(client, name, args = {}) {
  const result = await client.callTool({ name, arguments: args });
  if (result.isError) {
    throw new Error(`${name} failed: ${textOf(result)}`);
  }
  return JSON.parse(textOf(result));
}

const alice = await connect(args.token);
say("negotiated", { version: alice.transport.protocolVersion ?? null });
const answers = [];
for (let i = 0; i < 10; i++) {
  answers.push(await call(alice.client, "counter"));
}
say("counts", { counts: answers.map((a) => a.count), replicas: answers.map((a) => a.replica) });
const parallel = await Promise.all(Array.from({ length: 20 }, () => call(alice.client, "counter")));
say("parallel", { counts: parallel.map((a) => a.count).sort((x, y) => x - y) });

const handle = (await call(alice.client, "open_counter")).handle;
const byHandle = [];
for (let i = 0; i < 10; i++) {
  byHandle.push(await call(alice.client, "increment", { handle }));
}
say("handle-counts", { counts: byHandle.map((a) => a.count), replicas: byHandle.map((a) => a.replica) });

const session = alice.transport.sessionId;
say("session", { id: session });

// Another principal: its own session sees nothing of alice's handle, and
// alice's session id presented with its token is unknown.
const bob = await connect(args["other-token"]);
const foreign = await bob.client.callTool({ name: "increment", arguments: { handle } });
say("foreign-handle", { is_error: Boolean(foreign.isError), text: textOf(foreign) });
const response = await fetch(args.url, {
  method: "POST",
  headers: {
    Authorization: `Bearer ${args["other-token"]}`,
    Accept: "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": alice.transport.protocolVersion ?? "2025-11-25",
    "Mcp-Session-Id": session,
  },
  body: JSON.stringify({ jsonrpc: "2.0", id: 78, method: "ping" }),
});
say("foreign", { status: response.status, body: await response.text() });
await bob.transport.terminateSession();
await bob.client.close();

await alice.transport.terminateSession();
await alice.client.close();
say("closed");

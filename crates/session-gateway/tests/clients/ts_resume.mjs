// The official MCP TypeScript SDK (npm `@modelcontextprotocol/sdk`)
// resuming a broken stream. Run by tests/resumable_streams.rs as
//
//     node ts_resume.mjs --modules DIR --url URL --token TOKEN
//
// with URL a proxy in front of nginx that cuts the connection carrying the
// call's stream after its 5th progress notification. The SDK, having seen
// the stream's priming event, resumes on its own with GET and
// `Last-Event-ID`; this script only makes the call (20 notifications, 100 ms
// apart) and reports what reached it. It prints one JSON object per line,
// one per step, and exits non-zero if a step threw; the Rust test judges
// the figures.

import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const { values: args } = parseArgs({
  options: {
    modules: { type: "string" },
    url: { type: "string" },
    token: { type: "string" },
  },
});

const sdk = (path) =>
  import(pathToFileURL(join(args.modules, "@modelcontextprotocol/sdk/dist/esm", path)).href);
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

function say(step, fields = {}) {
  console.log(JSON.stringify({ step, ...fields }));
}

const transport = new StreamableHTTPClientTransport(new URL(args.url), {
  requestInit: { headers: { Authorization: `Bearer ${args.token}` } },
});
const errors = [];
const client = new Client({ name: "session-gateway-ts-resume", version: "0" });
await client.connect(transport);
// The SDK reports the broken stream here, then resumes it itself.
transport.onerror = (error) => errors.push(String(error));
say("connected", { session: transport.sessionId ?? null });

const progress = [];
const result = await client.callTool(
  { name: "progress", arguments: { steps: 20, interval_ms: 100 } },
  undefined,
  {
    onprogress: (update) => progress.push(update.progress),
    resetTimeoutOnProgress: true,
    timeout: 60_000,
  },
);
say("called", {
  progress,
  result: JSON.parse(result.content?.[0]?.text ?? "null"),
  errors,
});
await client.close();

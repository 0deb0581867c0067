"""The official MCP Python SDK (PyPI `mcp`) against session-gateway.

Run by tests/official_clients.rs as

    python python_client.py --url URL --token TOKEN --other-token TOKEN --mode auto|legacy

It prints one JSON object per line, one per step, and exits non-zero if a
step raised; the Rust test judges the figures. In mode "auto" (the SDK's
default) the client negotiates protocol 2026-07-28 with `server/discover` and
counts behind a handle; in mode "legacy" it uses the initialize handshake
and the session-scoped `counter`.
"""

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def client(url, token, mode):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


def text_of(result):
    return result.content[0].text if result.content else ""


async def call(session, name, arguments=None):
    """A tool's JSON result; a tool error raises with its text."""
    result = await session.call_tool(name, arguments or {})
    if result.is_error:
        raise RuntimeError(f"{name} failed: {text_of(result)}")
    return json.loads(text_of(result))


def say(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


async def auto(args):
    async with client(args.url, args.token, "auto") as alice:
        say("negotiated", version=str(alice.session.protocol_version))
        handle = (await call(alice, "open_counter"))["handle"]
        answers = [await call(alice, "increment", {"handle": handle}) for _ in range(10)]
        say("counts", counts=[a["count"] for a in answers], replicas=[a["replica"] for a in answers])
        parallel = (await call(alice, "open_counter"))["handle"]
        answers = await asyncio.gather(
            *(call(alice, "increment", {"handle": parallel}) for _ in range(20))
        )
        say("parallel", counts=sorted(a["count"] for a in answers))
        whoami = await call(alice, "whoami")
        say("whoami", session=whoami["session"], principal=whoami["principal"])
        async with client(args.url, args.other_token, "auto") as bob:
            foreign = await bob.call_tool("increment", {"handle": handle})
            unknown = await bob.call_tool("increment", {"handle": "00000000-0000-4000-8000-000000000000"})
            say(
                "foreign",
                is_error=bool(foreign.is_error),
                text=text_of(foreign),
                unknown_text=text_of(unknown),
            )
        after = await call(alice, "increment", {"handle": handle})
        say("after-foreign", count=after["count"])
        closed = await call(alice, "close_counter", {"handle": handle})
        gone = await alice.call_tool("increment", {"handle": handle})
        say("closed", closed=closed["closed"], gone_is_error=bool(gone.is_error), gone_text=text_of(gone))


async def legacy(args):
    async with client(args.url, args.token, "legacy") as alice:
        say("negotiated", version=str(alice.session.protocol_version))
        answers = [await call(alice, "counter") for _ in range(10)]
        say("counts", counts=[a["count"] for a in answers], replicas=[a["replica"] for a in answers])
        answers = await asyncio.gather(*(call(alice, "counter") for _ in range(20)))
        say("parallel", counts=sorted(a["count"] for a in answers))
        session = (await call(alice, "whoami"))["session"]
        say("session", id=session)
        # Another principal presenting this session id: answered as unknown.
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.post(
                args.url,
                headers={
                    "Authorization": f"Bearer {args.other_token}",
                    "Accept": "application/json, text/event-stream",
                    "Content-Type": "application/json",
                    "MCP-Protocol-Version": str(alice.session.protocol_version),
                    "Mcp-Session-Id": session,
                },
                content=json.dumps({"jsonrpc": "2.0", "id": 77, "method": "ping"}),
            )
            say("foreign", status=response.status_code, body=response.text)
        # Leaving the block sends the SDK's DELETE for the session.
    say("closed")


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--other-token", required=True)
    parser.add_argument("--mode", choices=["auto", "legacy"], required=True)
    args = parser.parse_args()
    await (auto(args) if args.mode == "auto" else legacy(args))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException as error:  # noqa: BLE001 - the test wants the reason on stderr
        print(f"python client failed: {error!r}", file=sys.stderr)
        raise

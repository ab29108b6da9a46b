"""Talk to the gateway's MCP endpoint with the official MCP Python SDK, as an MCP host would.

Usage:
    mcp_client.py URL [--token TOKEN] [--call NAME] [--args JSON]

Connects over Streamable HTTP with the SDK's high-level `Client` in its default connect
mode, lists the tools and, with --call, calls one. Prints one JSON object:

    {"protocolVersion": ..., "serverName": ..., "tools": [{"name", "title", "description",
     "inputSchema", "outputSchema"}, ...],
     "call": null | {"isError": bool, "structuredContent": ..., "meta": ..., "text": str | null}}

Exits 0 when the protocol exchange worked, even if the tool reported an error (that is
the tool's answer, carried in "isError"); otherwise exits 1 with the error on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

# Bounds every HTTP request, every MCP request and the whole session, so a server that
# hangs fails the run instead of stalling it.
TIMEOUT_SECONDS = 20.0
# A server that paginates forever must not loop forever.
MAX_TOOL_PAGES = 100


def _first_text(content: list[Any]) -> str | None:
    for block in content:
        if getattr(block, "type", None) == "text":
            return block.text
    return None


async def run(url: str, token: str | None, call: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    # The SDK takes headers and timeouts through the HTTP client it is given; the client
    # stays ours to close.
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(TIMEOUT_SECONDS)) as http:
        transport = streamable_http_client(url, http_client=http)
        # No `mode=`: the default ("auto") first probes `server/discover` and falls back to
        # the `initialize` handshake when the server does not know that method, as users get.
        async with Client(transport, read_timeout_seconds=TIMEOUT_SECONDS) as client:
            tools = []
            cursor = None
            for _ in range(MAX_TOOL_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
            else:
                raise RuntimeError(f"tools/list still paginating after {MAX_TOOL_PAGES} pages")

            result = None
            if call is not None:
                # The SDK checks a successful result's structuredContent against the tool's
                # outputSchema and raises if it does not conform: a protocol failure here.
                outcome = await client.call_tool(call, arguments)
                result = {
                    "isError": outcome.is_error,
                    "structuredContent": outcome.structured_content,
                    "meta": outcome.meta,
                    "text": _first_text(outcome.content),
                }

            server = client.server_info
            return {
                "protocolVersion": client.protocol_version,
                "serverName": server.name if server is not None else None,
                "tools": [
                    {
                        "name": tool.name,
                        "title": tool.title,
                        "description": tool.description,
                        "inputSchema": tool.input_schema,
                        "outputSchema": tool.output_schema,
                    }
                    for tool in tools
                ],
                "call": result,
            }


def _describe(exc: BaseException) -> str:
    """The innermost errors: anyio wraps failures of the SDK's tasks in exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"TimeoutError: no answer within {TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the MCP endpoint, e.g. http://127.0.0.1:18181/mcp")
    parser.add_argument("--token", help="sent as `Authorization: Bearer TOKEN`")
    parser.add_argument("--call", metavar="NAME", help="a tool to call after listing")
    parser.add_argument("--args", default="{}", metavar="JSON", help="the tool's arguments, a JSON object")
    args = parser.parse_args()

    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        parser.error(f"--args is not JSON: {exc}")
    if not isinstance(arguments, dict):
        parser.error("--args must be a JSON object")

    async def bounded() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT_SECONDS):
            return await run(args.url, args.token, args.call, arguments)

    try:
        report = anyio.run(bounded)
    except Exception as exc:  # any failure of the exchange: report it, exit non-zero
        print(f"mcp_client: {_describe(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

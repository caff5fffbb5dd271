"""Drive runwarden's MCP server with the official MCP Python SDK and report what it saw.

Usage: client.py http URL TOKEN MODE SCRIPT
       client.py stdio RUNWARDEN_BINARY SERVER_URL TOKEN MODE SCRIPT

MODE is the SDK's connect mode ("legacy": the initialize handshake; "auto": probe
server/discover, fall back to initialize). SCRIPT is a JSON list of steps:
{"list": true} or {"call": NAME, "arguments": {...}}. Prints one JSON object: the
negotiated protocol version, the server's name, and each step's result, for the
Rust test to check. Exits non-zero only if the client itself fails.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import Implementation


async def main() -> None:
    kind = sys.argv[1]
    if kind == "http":
        url, token, mode, script = sys.argv[2:6]
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx2.Timeout(30.0, read=120.0),
        )
        server = streamable_http_client(url, http_client=http)
    else:
        binary, server_url, token, mode, script = sys.argv[2:7]
        server = StdioServerParameters(
            command=binary,
            args=["mcp", "--server", server_url],
            env={"RUNWARDEN_TOKEN": token},
        )
    steps = json.loads(script)
    report = {"steps": []}
    async with Client(
        server,
        mode=mode,
        client_info=Implementation(name="runwarden-mcp-test", version="1.0"),
        read_timeout_seconds=120,
    ) as client:
        report["protocol_version"] = client.protocol_version
        info = client.server_info
        report["server"] = info.name if info else None
        for step in steps:
            try:
                if "list" in step:
                    tools = await client.list_tools()
                    report["steps"].append(
                        {
                            "tools": [
                                {
                                    "name": t.name,
                                    "description": t.description,
                                    "input_schema": t.input_schema,
                                    "annotations": t.annotations.model_dump(by_alias=True, exclude_none=True)
                                    if t.annotations
                                    else None,
                                }
                                for t in tools.tools
                            ]
                        }
                    )
                else:
                    r = await client.call_tool(step["call"], step.get("arguments"))
                    report["steps"].append(
                        {
                            "is_error": r.is_error,
                            "text": "\n".join(c.text for c in r.content if c.type == "text"),
                            "structured": r.structured_content,
                        }
                    )
            except MCPError as e:
                report["steps"].append({"error": {"code": e.code, "message": str(e)}})
    print(json.dumps(report))


asyncio.run(main())

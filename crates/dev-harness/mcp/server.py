"""An MCP server on the official Python SDK (PyPI `mcp` 2.x, `MCPServer`), Streamable HTTP at
/mcp, for the tests and checks of agent-server's MCP client. Not written to please our client:
it uses the SDK's defaults (stateful sessions, SSE or JSON answers as the SDK chooses).

    python3 server.py --port 8123 [--token SECRET] [--name py]

Tools: add (structured result), echo, fail (raises: an isError result), wait (sleeps), grow
(registers the tool `late` and announces notifications/tools/list_changed), traceparent (the
W3C trace context the call carried in `_meta`). `POST /echo` is the
same echo as a plain HTTP endpoint (the baseline of the MCP-versus-HTTP-tool benchmark);
`GET /counts` says how many `wait` calls started, and how many the client cancelled.
"""

import argparse
import asyncio

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse


COUNTS = {"started": 0, "cancelled": 0}


def build(name: str) -> MCPServer:
    server = MCPServer(name)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Answers the text it is given."""
        return f"echo: {text}"

    @server.tool()
    def fail(message: str) -> str:
        """Always fails with the message (a ToolError: the message reaches the client)."""
        raise ToolError(message)

    @server.tool()
    async def wait(seconds: float) -> str:
        """Sleeps, then answers."""
        COUNTS["started"] += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            # The client cancelled the call (notifications/cancelled): counted for the tests.
            COUNTS["cancelled"] += 1
            raise
        return f"waited {seconds}s"

    @server.tool()
    def traceparent(ctx: Context) -> str:
        """Answers the W3C traceparent the call carried in its _meta ("none" without one)."""
        meta = ctx.request_context.meta or {}
        if isinstance(meta, dict):
            value = meta.get("traceparent")
        else:
            value = getattr(meta, "traceparent", None) or (meta.model_extra or {}).get("traceparent")
        return value or "none"

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Adds the tool `late` and tells the client its tool list changed."""

        def late() -> str:
            """A tool that appeared after the session began."""
            return "late answer"

        server.add_tool(late)
        await ctx.session.send_tool_list_changed()
        return "grown"

    @server.custom_route("/counts", methods=["GET"])
    async def counts_route(request: Request) -> JSONResponse:
        return JSONResponse(COUNTS)

    @server.custom_route("/echo", methods=["POST"])
    async def echo_route(request: Request) -> PlainTextResponse:
        body = await request.json()
        return PlainTextResponse(f"echo: {body.get('text', '')}")

    return server


def with_token(app, token: str):
    """The app behind a bearer token check (401 without it)."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                response = JSONResponse({"error": "invalid_token"}, status_code=401,
                                        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token")
    parser.add_argument("--name", default="py")
    args = parser.parse_args()
    app = build(args.name).streamable_http_app(host=args.host)
    if args.token:
        app = with_token(app, args.token)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

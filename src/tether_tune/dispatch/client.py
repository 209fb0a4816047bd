"""MCP JSON-RPC 2.0 over HTTP (``httpx``) to a CodeTether server: ``tools/list`` (checked against our tools at
connect time), ``tools/call``, both result shapes, and every failure turned into a
:class:`~tether_tune.errors.ServerError` that says what to do.

This module speaks the protocol; how our 8 tools map onto the server's is ``mapping``. The server answers
``tools/call`` with a plain JSON object in ``result``; an MCP server may wrap it as ``{"content": [{"type":
"text", "text": "<json>"}], "isError": ...}``; both are read. A tool error is HTTP 200 with ``result.error``
(raised as :class:`~tether_tune.errors.ToolCallError`); an unknown method is HTTP 400 with JSON-RPC code -32601.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import ServerError, ServerUnreachableError, ToolCallError
from ..tools import load_tools
from .mapping import Drift, check_drift

#: Where the server answers MCP JSON-RPC (on its MCP port, ``MCP_HTTP_PORT``; the main ``--port`` has no MCP).
RPC_PATH = "/mcp/v1/rpc"
#: ``MCP_HTTP_PORT``'s default in ``codetether run``: the default of ``--server``.
DEFAULT_SERVER = f"http://127.0.0.1:9000{RPC_PATH}"
DEFAULT_TIMEOUT_S = 10.0
START_HINT = ("Start one (docs/dispatch.md: `codetether run --host 127.0.0.1 --port P1` with "
              "MCP_HTTP_HOST=127.0.0.1 MCP_HTTP_PORT=P2) or pass its MCP address with --server")


def rpc_url(server: str) -> str:
    """The JSON-RPC endpoint of ``server``: ``http://HOST:PORT`` gets :data:`RPC_PATH`; a URL with a path is kept."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServerError(f"--server {server!r}: expected an http(s) URL such as {DEFAULT_SERVER}")
    path = parts.path if parts.path not in ("", "/") else RPC_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def rpc_request(method: str, params: Mapping[str, Any] | None, request_id: int) -> dict[str, Any]:
    """The JSON-RPC 2.0 request body (what the dry run prints)."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = dict(params)
    return body


def tool_call_request(name: str, arguments: Mapping[str, Any], request_id: int) -> dict[str, Any]:
    return rpc_request("tools/call", {"name": name, "arguments": dict(arguments)}, request_id)


def unwrap_result(result: Any) -> Any:
    """A ``tools/call`` result as a plain value: MCP ``content[]`` text parts joined and read as JSON (kept as
    ``{"text": ...}`` when not JSON); a plain object as it is. ``isError`` becomes ``{"error": text}``."""
    if not (isinstance(result, Mapping) and isinstance(result.get("content"), list)):
        return result
    texts = [p.get("text", "") for p in result["content"] if isinstance(p, Mapping) and p.get("type") == "text"]
    text = "".join(texts)
    if result.get("isError"):
        return {"error": text or "the tool reported an error without text"}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"text": text}


#: The keys of a tool error (``{"error": "Task ... not found"}``). A result with more is an answer: ``get_task`` of a
#: failed task carries that task's own ``error`` beside its ``task_id`` and ``status``.
_ERROR_KEYS = frozenset({"error", "success", "code", "details"})


def is_tool_error(result: Any) -> bool:
    return (isinstance(result, Mapping) and bool(result.get("error")) and result.get("success") is not True
            and set(result) <= _ERROR_KEYS)


class CodeTetherClient:
    """A JSON-RPC client of one CodeTether server, for our tools (default: CodeTether's 8, shipped with the
    package). :meth:`connect` reads the server's ``tools/list`` and checks it against them.

    ``transport``: an ``httpx`` transport (tests give ``httpx.MockTransport`` to produce broken answers)."""

    def __init__(self, server: str = DEFAULT_SERVER,
                 tools: str | os.PathLike | Sequence[Mapping[str, Any]] | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, transport: httpx.BaseTransport | None = None):
        self.url = rpc_url(server)
        self.tools = load_tools(tools) if tools is None or isinstance(tools, (str, os.PathLike)) else list(tools)
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, transport=transport, trust_env=False)
        self._next_id = 0
        self.drift: Drift | None = None  # set by connect()

    def connect(self) -> Drift:
        """``tools/list``, checked against our tools (``mapping.check_drift``); the drift is kept and returned."""
        self.drift = check_drift(self.tools, self.list_tools())
        return self.drift

    def __enter__(self) -> "CodeTetherClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def rpc(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request; return its ``result`` or raise a :class:`ServerError` that says what to do."""
        self._next_id += 1
        body = rpc_request(method, params, self._next_id)
        response = self._post(body)
        reply = self._reply(response, method)
        if "error" in reply:
            raise ServerError(_rpc_error_message(self.url, method, reply["error"], response.status_code))
        if response.status_code >= 400:
            raise ServerError(f"{self.url} answered {method} with HTTP {response.status_code}: "
                              f"{response.text[:200]!r}; check the server's log")
        if reply.get("id") != body["id"] or "result" not in reply:
            raise ServerError(f"{self.url} answered {method} with a reply that is not the JSON-RPC answer to it "
                              f"(id {reply.get('id')!r}, expected {body['id']}): {response.text[:200]!r}")
        return reply["result"]

    def list_tools(self) -> list[dict[str, Any]]:
        """``tools/list``: the server's tools (``name``, ``inputSchema``)."""
        result = self.rpc("tools/list")
        tools = result.get("tools") if isinstance(result, Mapping) else None
        if not isinstance(tools, list):
            raise ServerError(f"{self.url}: tools/list did not return a list of tools: {str(result)[:200]!r}")
        return tools

    def call_tool(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """``tools/call``: the tool's result, unwrapped (:func:`unwrap_result`); ``result.error`` raises
        :class:`ToolCallError` with the server's words."""
        result = unwrap_result(self.rpc("tools/call", {"name": name, "arguments": dict(arguments)}))
        if is_tool_error(result):
            raise ToolCallError(f"the server's {name} answered: {result['error']}")
        return result

    def _post(self, body: Mapping[str, Any]) -> httpx.Response:
        try:
            return self._http.post(self.url, json=body)
        except httpx.TimeoutException:
            raise ServerUnreachableError(
                f"no answer from {self.url} within {self.timeout:g} s ({body['method']}): the server is busy or "
                "stuck; check its log, retry, or give more time with --timeout") from None
        except httpx.TransportError as err:
            raise ServerUnreachableError(
                f"cannot reach a CodeTether server at {self.url} ({type(err).__name__}: {err}): is it running? "
                + START_HINT) from None

    def _reply(self, response: httpx.Response, method: str) -> dict[str, Any]:
        try:
            reply = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            reply = None
        if isinstance(reply, dict):
            return reply
        if response.status_code == 404:
            raise ServerError(f"{self.url} has no MCP endpoint (HTTP 404): give the server's MCP port "
                              f"(MCP_HTTP_PORT, not its main --port) and the path {RPC_PATH}")
        raise ServerError(f"{self.url} answered {method} with HTTP {response.status_code} and a body that is not "
                          f"JSON-RPC ({response.text[:120]!r}): is --server a CodeTether MCP endpoint ({RPC_PATH})?")


def _rpc_error_message(url: str, method: str, error: Any, status: int) -> str:
    code = error.get("code") if isinstance(error, Mapping) else None
    text = error.get("message") if isinstance(error, Mapping) else error
    hint = {
        -32601: "the server does not know this method: is it a CodeTether MCP server, and a recent one?",
        -32602: "the server rejected the arguments: run with --json to see what was sent",
        -32700: "the server could not parse the request: report this as a tether-tune bug",
    }.get(code, "check the server's log")
    return f"{url} refused {method} (HTTP {status}, JSON-RPC error {code}: {text}): {hint}"

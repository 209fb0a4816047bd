"""Dispatch without a server: the mapping of our 8 tools onto the server's, the drift check against the real
server's ``tools/list`` (saved in ``fixtures/codetether_tools_list.json``), both result shapes, playback on the
client, and every failure turned into a clear error. Broken answers come from ``httpx.MockTransport``; how the
real server behaves is ``tests/integration``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tether_tune.dispatch import (
    CodeTetherClient, check_drift, dispatch_calls, dry_run_requests, rpc_url, summarize, to_server, unwrap_result,
)
from tether_tune.dispatch.mapping import from_server
from tether_tune.errors import ServerError, ServerUnreachableError, TetherTuneError, ToolCallError, ToolDriftError
from tether_tune.format import Call

FIXTURES = Path(__file__).parent / "fixtures"
TASK = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"


@pytest.fixture(scope="module")
def server_tools() -> list[dict]:
    return json.loads((FIXTURES / "codetether_tools_list.json").read_text())["tools"]


def fake_server(server_tools: list[dict], answer: Callable[[dict], Any], seen: list[dict] | None = None,
                ) -> httpx.MockTransport:
    """``tools/list`` from the fixture; ``tools/call`` answered by ``answer(params)`` (a result, or an
    ``httpx.Response`` to send as is). Every request body is appended to ``seen``."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if seen is not None:
            seen.append(body)
        if body["method"] == "tools/list":
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": {"tools": server_tools}})
        out = answer(body["params"])
        if isinstance(out, httpx.Response):
            return out
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": out})

    return httpx.MockTransport(handle)


def client_for(transport: httpx.MockTransport, **kw: Any) -> CodeTetherClient:
    return CodeTetherClient("http://127.0.0.1:9", transport=transport, **kw)


# ------------------------------------------------------------------------------------------------------ mapping


@pytest.mark.parametrize("call, name, arguments", [
    (Call("create_task", {"title": "fix login", "priority": 8}), "create_task", {"title": "fix login", "priority": 8}),
    (Call("list_tasks", {"status": "pending"}), "list_tasks", {"status": "pending"}),
    (Call("get_task", {"task_id": TASK}), "get_task", {"task_id": TASK}),
    (Call("cancel_task", {"task_id": TASK}), "cancel_task", {"task_id": TASK}),
    (Call("discover_agents", {}), "discover_agents", {}),
    (Call("send_message", {"agent_name": "builder", "message": "go"}), "send_to_agent",
     {"agent_name": "builder", "message": "go"}),
    (Call("get_session_history", {"session_id": TASK}), "get_messages", {"conversation_id": TASK, "limit": 1000}),
    (Call("playback_session", {"session_id": TASK, "style": "summary"}), "get_messages",
     {"conversation_id": TASK, "limit": 1000}),
])
def test_each_of_our_tools_maps_onto_the_server(call: Call, name: str, arguments: dict) -> None:
    sc = to_server(call)
    assert (sc.name, sc.arguments) == (name, arguments)


def test_dry_run_requests_are_the_json_rpc_bodies() -> None:
    bodies = dry_run_requests([Call("discover_agents", {}), Call("send_message", {"agent_name": "a", "message": "m"})])
    assert bodies == [
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "discover_agents", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "send_to_agent", "arguments": {"agent_name": "a", "message": "m"}}},
    ]


@pytest.mark.parametrize("given, url", [
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000/mcp/v1/rpc"),
    ("127.0.0.1:9000/", "http://127.0.0.1:9000/mcp/v1/rpc"),
    ("http://h:1/mcp", "http://h:1/mcp"),
])
def test_server_url(given: str, url: str) -> None:
    assert rpc_url(given) == url


def test_bad_server_url_names_the_flag() -> None:
    with pytest.raises(ServerError, match="--server 'ftp://x': expected an http"):
        rpc_url("ftp://x")


# -------------------------------------------------------------------------------------------- result shapes, playback


def test_both_result_shapes() -> None:
    plain = {"task_id": TASK, "status": "pending"}
    assert unwrap_result(plain) == plain
    wrapped = {"content": [{"type": "text", "text": json.dumps(plain)}]}
    assert unwrap_result(wrapped) == plain
    assert unwrap_result({"content": [{"type": "text", "text": "just words"}]}) == {"text": "just words"}
    assert unwrap_result({"content": [{"type": "text", "text": "boom"}], "isError": True}) == {"error": "boom"}


MESSAGES = {"messages": [
    {"timestamp": "2026-11-25T07:24:10.9", "type": "agent", "agent_name": "hub", "content": "received"},
    {"timestamp": "2026-11-25T07:24:10.8", "type": "human", "agent_name": "MCP Client", "content": "hello there"},
]}


def test_playback_verbatim_reads_the_messages_in_order() -> None:
    out = from_server(Call("playback_session", {"session_id": TASK, "style": "verbatim"}), MESSAGES)
    assert [(m["from"], m["content"]) for m in out["messages"]] == [("MCP Client", "hello there"), ("hub", "received")]
    assert out["message_count"] == 2 and "summary" not in out


def test_playback_summary_is_a_short_digest() -> None:
    out = from_server(Call("playback_session", {"session_id": TASK, "style": "summary"}), MESSAGES)
    assert out["summary"] == summarize(sorted(MESSAGES["messages"], key=lambda m: m["timestamp"]))
    assert out["summary"].splitlines() == [
        "2 messages from MCP Client (1), hub (1), 2026-11-25T07:24:10 to 2026-11-25T07:24:10.",
        "First, MCP Client: hello there",
        "Last, hub: received",
    ]
    assert summarize([]) == "no messages"


# -------------------------------------------------------------------------------------------------------- drift


def test_the_real_server_has_every_tool_we_need(tools: list[dict], server_tools: list[dict]) -> None:
    drift = check_drift(tools, server_tools)
    assert not [p for p in drift.problems if p.blocking], drift.report()
    # Our agent_type has "forage"; codetether 1.4.3 does not list it (it stores it all the same): a warning.
    assert [p.message for p in drift.warnings] == [
        "create_task (server tool create_task): argument 'agent_type': 'forage' not among the server's values "
        "['build', 'plan', 'general', 'explore']"]


def _tool(tools: list[dict], name: str) -> dict:
    return next(t for t in tools if t["name"] == name)


def test_drift_missing_tool_renamed_and_retyped_arguments(tools: list[dict], server_tools: list[dict]) -> None:
    changed = copy.deepcopy([t for t in server_tools if t["name"] != "send_to_agent"])
    schema = _tool(changed, "get_messages")["inputSchema"]
    schema["properties"]["thread_id"] = schema["properties"].pop("conversation_id")
    _tool(changed, "create_task")["inputSchema"]["properties"]["priority"]["type"] = "string"
    _tool(changed, "get_task")["inputSchema"]["required"] = ["task_id", "tenant"]
    drift = check_drift(tools, changed)
    blocking = {p.tool: p.message for p in drift.problems if p.blocking}
    assert blocking["send_message"] == "send_message: the server has no tool 'send_to_agent'"
    assert "argument 'session_id' is gone from the server's tool" in blocking["get_session_history"]
    assert "argument 'session_id' is gone" in blocking["playback_session"]
    assert blocking["create_task"].endswith("argument 'priority' is integer in our tools but string on the server")
    assert blocking["get_task"].endswith("the server requires 'tenant', which our tool does not always send")
    assert "list_tasks" not in blocking


def test_a_drifted_tool_is_not_sent(tools: list[dict], server_tools: list[dict]) -> None:
    seen: list[dict] = []
    changed = [t for t in server_tools if t["name"] != "send_to_agent"]
    with client_for(fake_server(changed, lambda p: {"ok": True}, seen)) as client:
        assert client.connect().blocking("send_message")
        with pytest.raises(ToolDriftError, match="send_message: not sent: the server's tools changed"):
            dispatch_calls([Call("send_message", {"agent_name": "a", "message": "m"})], client)
        assert dispatch_calls([Call("discover_agents", {})], client)[0].result == {"ok": True}
    assert [b["method"] for b in seen] == ["tools/list", "tools/call"]


# ------------------------------------------------------------------------------------------------------- errors


def test_server_down() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with CodeTetherClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ServerUnreachableError, match=f"cannot reach a CodeTether server at http://127.0.0.1:{port}"
                                                         "/mcp/v1/rpc .*Start one"):
            client.connect()


def test_timeout(server_tools: list[dict]) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with client_for(httpx.MockTransport(hang), timeout=0.5) as client:
        with pytest.raises(ServerUnreachableError, match=r"no answer from .* within 0.5 s \(tools/list\).*--timeout"):
            client.connect()


@pytest.mark.parametrize("response, match", [
    (httpx.Response(500, text="Internal Server Error"), "HTTP 500 and a body that is not JSON-RPC"),
    (httpx.Response(404, text="Not Found"), r"has no MCP endpoint \(HTTP 404\): give the server's MCP port"),
    (httpx.Response(400, json={"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "Method not found"}}),
     r"refused tools/call \(HTTP 400, JSON-RPC error -32601: Method not found\): the server does not know"),
    (httpx.Response(502, json={"detail": "bad gateway"}), "answered tools/call with HTTP 502"),
    (httpx.Response(200, json={"jsonrpc": "2.0", "id": 99, "result": {}}), "not the JSON-RPC answer to it"),
])
def test_http_and_json_rpc_errors(server_tools: list[dict], response: httpx.Response, match: str) -> None:
    with client_for(fake_server(server_tools, lambda p: response)) as client:
        with pytest.raises(ServerError, match=match):
            dispatch_calls([Call("discover_agents", {})], client)


def test_tool_error_names_the_call_and_what_to_do(server_tools: list[dict]) -> None:
    def answer(params: dict) -> dict:
        return {"error": f"Task {params['arguments']['task_id']} not found"}

    with client_for(fake_server(server_tools, answer)) as client:
        with pytest.raises(ToolCallError) as err:
            dispatch_calls([Call("get_task", {"task_id": TASK})], client)
    assert str(err.value) == (f"get_task failed: the server's get_task answered: Task {TASK} not found (no task has "
                              f"the id '{TASK}' on this server: list_tasks shows the ids)")


def test_tool_error_in_the_mcp_content_shape(server_tools: list[dict]) -> None:
    wrapped = {"content": [{"type": "text", "text": "no such agent"}], "isError": True}
    with client_for(fake_server(server_tools, lambda p: wrapped)) as client:
        with pytest.raises(ToolCallError, match="discover_agents failed: the server's discover_agents answered: "
                                                 "no such agent"):
            dispatch_calls([Call("discover_agents", {})], client)


def test_a_failed_task_is_an_answer_not_a_tool_error(server_tools: list[dict]) -> None:
    failed = {"task_id": TASK, "title": "deploy", "status": "failed", "error": "worker crashed", "result": None}
    with client_for(fake_server(server_tools, lambda p: failed)) as client:
        assert dispatch_calls([Call("get_task", {"task_id": TASK})], client)[0].result == failed


def test_an_invalid_call_is_not_sent(server_tools: list[dict]) -> None:
    seen: list[dict] = []
    with client_for(fake_server(server_tools, lambda p: {}, seen)) as client:
        with pytest.raises(ToolCallError, match=r"create_task: not sent: create_task.priority: expected integer"):
            dispatch_calls([Call("create_task", {"title": "x", "priority": "high"})], client)
    assert [b["method"] for b in seen] == ["tools/list"]


def test_declined_confirmation_sends_nothing(server_tools: list[dict]) -> None:
    seen: list[dict] = []
    asked: list[Call] = []
    calls = [Call("cancel_task", {"task_id": TASK}), Call("discover_agents", {})]
    with client_for(fake_server(server_tools, lambda p: {"agents": []}, seen)) as client:
        results = dispatch_calls(calls, client, confirm=lambda c: asked.append(c) or False)
    assert asked == calls[:1] and [r.skipped for r in results] == [True, False]
    assert [b["params"]["name"] for b in seen if b["method"] == "tools/call"] == ["discover_agents"]
    assert isinstance(ServerError("x"), TetherTuneError)

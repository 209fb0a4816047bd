"""Our 8 tools carried out on the real CodeTether server (with its PostgreSQL): a task created, read back, listed,
cancelled; a message that reaches ``send_to_agent``; a conversation's history and both playback styles; the
agents; and the failures — an unknown task, a codebase the server lacks, an unknown method, a server that is
down, tools that drifted."""

from __future__ import annotations

import copy
import statistics
import uuid
from typing import Iterator

import pytest

from tether_tune.dispatch import CodeTetherClient, carry_out, dispatch_calls
from tether_tune.errors import ServerError, ServerUnreachableError, ToolCallError, ToolDriftError
from tether_tune.format import Call

pytestmark = pytest.mark.integration
UNKNOWN = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"


@pytest.fixture
def client(codetether_server) -> Iterator[CodeTetherClient]:
    with CodeTetherClient(codetether_server.url) as c:
        c.connect()
        yield c


def do(client: CodeTetherClient, name: str, **arguments) -> dict:
    return carry_out(Call(name, arguments), client).result


def test_connect_checks_the_live_tools(client: CodeTetherClient) -> None:
    assert client.drift is not None
    assert not [p for p in client.drift.problems if p.blocking], client.drift.report()
    assert [p.tool for p in client.drift.warnings] == ["create_task"]  # 'forage': ours, not in the server's enum


def test_task_created_read_listed_cancelled(client: CodeTetherClient) -> None:
    created = do(client, "create_task", title="fix the login bug", description="users cannot sign in",
                 agent_type="plan", priority=7, codebase_id="global")
    task_id = created["task_id"]
    assert str(uuid.UUID(task_id)) == task_id and created["status"] == "pending"
    task = do(client, "get_task", task_id=task_id)
    assert (task["title"], task["status"], task["priority"], task["agent_type"]) == (
        "fix the login bug", "pending", 7, "plan")
    assert task_id in [t["task_id"] for t in do(client, "list_tasks", status="pending")["tasks"]]
    assert task_id in [t["task_id"] for t in do(client, "list_tasks", codebase_id="global")["tasks"]]
    assert do(client, "cancel_task", task_id=task_id)["status"] == "cancelled"
    assert do(client, "get_task", task_id=task_id)["status"] == "cancelled"
    assert task_id in [t["task_id"] for t in do(client, "list_tasks", status="cancelled")["tasks"]]
    assert task_id not in [t["task_id"] for t in do(client, "list_tasks", status="pending")["tasks"]]


def test_send_message_reaches_send_to_agent(client: CodeTetherClient) -> None:
    res = carry_out(Call("send_message", {"agent_name": "code-reviewer", "message": "review PR 12"}), client)
    assert res.server_call.name == "send_to_agent"
    assert res.result["routing"]["target_agent_name"] == "code-reviewer" and res.result["status"] == "queued"
    # It reached the server as a task waiting for a code-reviewer worker.
    task = do(client, "get_task", task_id=res.result["task_id"])
    assert (task["title"], task["status"]) == ("To code-reviewer: review PR 12", "pending")


@pytest.fixture
def conversation(client: CodeTetherClient) -> str:
    """A conversation this test creates: the server's own send_message adds to it (and the server answers)."""
    cid = client.call_tool("send_message", {"message": "please run the tests"})["conversation_id"]
    client.call_tool("send_message", {"message": "then deploy to staging", "conversation_id": cid})
    return cid


def test_session_history_and_both_playback_styles(client: CodeTetherClient, conversation: str) -> None:
    history = do(client, "get_session_history", session_id=conversation)
    said = [m["content"] for m in history["messages"] if m["type"] == "human"]
    assert said == ["please run the tests", "then deploy to staging"]
    verbatim = do(client, "playback_session", session_id=conversation, style="verbatim")
    assert [m["content"] for m in verbatim["messages"] if m["type"] == "human"] == said
    assert verbatim["message_count"] == len(history["messages"]) == 4  # each message and the server's answer
    assert [m["timestamp"] for m in verbatim["messages"]] == sorted(m["timestamp"] for m in verbatim["messages"])
    summary = do(client, "playback_session", session_id=conversation, style="summary")
    first, *_, last = summary["summary"].splitlines()
    assert first.startswith("4 messages from MCP Client (2), A2A Coordination Hub (2), ")
    assert summary["summary"].splitlines()[1] == "First, MCP Client: please run the tests"
    assert last.startswith("Last, A2A Coordination Hub: ")


def test_discover_agents(client: CodeTetherClient) -> None:
    agents = do(client, "discover_agents")["agents"]
    assert agents and all(a.get("name") for a in agents)


def test_all_eight_tools_in_one_dispatch(client: CodeTetherClient, conversation: str) -> None:
    task_id = do(client, "create_task", title="one of each")["task_id"]
    calls = [Call("create_task", {"title": "another"}), Call("list_tasks", {}), Call("get_task", {"task_id": task_id}),
             Call("cancel_task", {"task_id": task_id}), Call("get_session_history", {"session_id": conversation}),
             Call("playback_session", {"session_id": conversation, "style": "summary"}), Call("discover_agents", {}),
             Call("send_message", {"agent_name": "test-runner", "message": "run the suite"})]
    results = dispatch_calls(calls, client, confirm=lambda call: True)
    assert [r.call.name for r in results] == [c.name for c in calls]
    assert all(not r.skipped and not r.result.get("error") for r in results)
    assert results[3].result["status"] == "cancelled"


def test_latency(client: CodeTetherClient, codetether_server) -> None:
    """Per-call round trips on loopback (print with -s); the server starts in seconds."""
    times = [carry_out(Call("discover_agents", {}), client).latency_s for _ in range(20)]
    times += [carry_out(Call("list_tasks", {"status": "pending"}), client).latency_s for _ in range(20)]
    median = statistics.median(times)
    print(f"\nstart: {codetether_server.start_s}\nper call: median {median * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms over {len(times)} calls")
    assert median < 1.0 and codetether_server.start_s["total"] < 60


def test_unknown_task(client: CodeTetherClient) -> None:
    with pytest.raises(ToolCallError) as err:
        do(client, "get_task", task_id=UNKNOWN)
    assert str(err.value) == (f"get_task failed: the server's get_task answered: Task {UNKNOWN} not found (no task "
                              f"has the id '{UNKNOWN}' on this server: list_tasks shows the ids)")
    with pytest.raises(ToolCallError, match=r"cancel_task failed: .* not found or cannot be cancelled \(no such task, "
                                            r"or it is no longer pending or working"):
        do(client, "cancel_task", task_id=UNKNOWN)


def test_unknown_codebase(client: CodeTetherClient) -> None:
    with pytest.raises(ToolCallError, match=r"create_task failed: the server's create_task answered: Failed to create "
                                            r"task \(the server could not store it: is there a codebase 'ec77c942'"):
        do(client, "create_task", title="x", codebase_id="ec77c942")


def test_unknown_method(client: CodeTetherClient) -> None:
    with pytest.raises(ServerError, match=r"refused bogus/method \(HTTP 400, JSON-RPC error -32601: Method not "
                                          r"found: bogus/method\)"):
        client.rpc("bogus/method")


def test_server_down(down_url: str) -> None:
    with CodeTetherClient(down_url) as c, pytest.raises(ServerUnreachableError, match="cannot reach"):
        dispatch_calls([Call("discover_agents", {})], c)


def test_drift_against_the_live_server(codetether_server, tools: list[dict]) -> None:
    """Our tools as an older or newer tether-tune might have them: a tool the server lacks, a renamed argument."""
    ours = copy.deepcopy(tools)
    get_task = next(t["function"] for t in ours if t["function"]["name"] == "get_task")
    get_task["parameters"] = {"type": "object", "properties": {"id": {"type": "string", "description": "Task id."}},
                              "required": ["id"]}
    ours.append({"type": "function", "function": {"name": "archive_task", "description": "Archive a task.",
                                                  "parameters": {"type": "object", "properties": {}}}})
    with CodeTetherClient(codetether_server.url, tools=ours) as c:
        drift = c.connect()
        assert {p.message for p in drift.problems if p.blocking} == {
            "archive_task: the server has no tool 'archive_task'",
            "get_task (server tool get_task): argument 'id' is gone from the server's tool (it takes task_id)",
            "get_task (server tool get_task): the server requires 'task_id', which our tool does not always send",
        }
        posts = codetether_server.rpc_posts()
        with pytest.raises(ToolDriftError, match="get_task: not sent: the server's tools changed"):
            carry_out(Call("get_task", {"id": UNKNOWN}), c)
        assert carry_out(Call("discover_agents", {}), c).result["agents"]  # the tools that match still work
    assert codetether_server.rpc_posts() == posts + 1  # discover_agents only

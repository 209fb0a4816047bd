"""Carrying our calls out: check each against our tools and the drift report, send it through the client, read
the answer back (``mapping.from_server``), and say what to do when it fails.

    from tether_tune.dispatch import CodeTetherClient, dispatch_calls
    from tether_tune.format import Call

    with CodeTetherClient("http://127.0.0.1:9000") as client:
        for r in dispatch_calls([Call("list_tasks", {"status": "pending"})], client):
            print(r.result)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import ToolCallError, ToolDriftError
from ..format import Call
from ..tools import validate_call
from .client import CodeTetherClient, tool_call_request
from .mapping import ServerCall, from_server, needs_confirmation, to_server

Confirm = Callable[[Call], bool]


@dataclass
class CallResult:
    call: Call
    server_call: ServerCall
    result: Any = None  # the server's answer (playback: the client's reading of it)
    latency_s: float = 0.0  # the round trip (tools/call), seconds
    skipped: bool = False  # not sent: confirmation declined

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"call": self.call.to_dict(), "server_call": vars(self.server_call).copy()}
        if self.skipped:
            return {**d, "skipped": True}
        return {**d, "result": self.result, "latency_s": round(self.latency_s, 4)}


def dry_run_requests(calls: Sequence[Call]) -> list[dict[str, Any]]:
    """The ``tools/call`` JSON-RPC bodies that carrying ``calls`` out would send (after one ``tools/list``)."""
    return [tool_call_request(sc.name, sc.arguments, i + 2) for i, sc in enumerate(map(to_server, calls))]


def check_call(call: Call, client: CodeTetherClient) -> None:
    """Refuse, before anything is sent, a call that is invalid against our tools or whose server tool drifted."""
    errors = validate_call(call, client.tools)
    if errors:
        raise ToolCallError(f"{call.name}: not sent: {'; '.join(errors)} (the call must fit the tools file)")
    drift = client.drift.blocking(call.name) if client.drift is not None else []
    if drift:
        raise ToolDriftError(f"{call.name}: not sent: the server's tools changed: "
                             + "; ".join(p.message for p in drift)
                             + ". Use a tether-tune and tools file that match this server")


def carry_out(call: Call, client: CodeTetherClient) -> CallResult:
    """One call on the server (connecting first if needed); a failure raises a :class:`ToolCallError` (or another
    :class:`~tether_tune.errors.ServerError`) that names the call and what to do."""
    if client.drift is None:
        client.connect()
    check_call(call, client)
    server_call = to_server(call)
    t0 = time.perf_counter()
    try:
        answer = client.call_tool(server_call.name, server_call.arguments)
    except ToolCallError as err:
        raise ToolCallError(f"{call.name} failed: {err}{_hint(call, str(err))}") from None
    latency = time.perf_counter() - t0
    return CallResult(call, server_call, from_server(call, answer), latency)


def dispatch_calls(calls: Sequence[Call], client: CodeTetherClient, confirm: Confirm | None = None,
                   on_result: Callable[[int, CallResult], None] | None = None) -> list[CallResult]:
    """Carry ``calls`` out in order. ``confirm(call)``, when given, is asked before each call that cannot be undone
    (``cancel_task``); a ``False`` skips that call. ``on_result(i, result)`` (from 1) sees each result as it comes.
    The first failure raises and stops the rest."""
    results = []
    for i, call in enumerate(calls, 1):
        if confirm is not None and needs_confirmation(call) and not confirm(call):
            res = CallResult(call, to_server(call), skipped=True)
        else:
            res = carry_out(call, client)
        results.append(res)
        if on_result is not None:
            on_result(i, res)
    return results


def _hint(call: Call, message: str) -> str:
    """What to do about a tool error, from what the server said."""
    text = message.lower()
    if "not found" in text and "task_id" in call.arguments:
        if "cannot be cancelled" in text:
            return (" (no such task, or it is no longer pending or working: only those can be cancelled; "
                    "get_task shows its status)")
        return f" (no task has the id {call.arguments['task_id']!r} on this server: list_tasks shows the ids)"
    if call.name == "create_task" and "failed to create" in text:
        where = call.arguments.get("codebase_id")
        return (f" (the server could not store it: is there a codebase {where!r} on this server? Leave codebase_id "
                "out to use 'global')" if where else " (the server could not store it: see the server's log)")
    return " (see the server's log)"

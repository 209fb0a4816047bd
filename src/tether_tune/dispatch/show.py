"""Calls and their results as a person reads them (``tether-tune run`` without ``--json``). One function per
tool; a tool without one is shown as indented JSON."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from ..format import Call
from .execute import CallResult
from .mapping import route


def describe_call(call: Call) -> str:
    """``create_task(priority=8, title='fix the login bug')``, and where the server differs from ours."""
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(call.arguments.items()))
    r = route(call.name)
    note = ""
    if r.emulated:
        note = f"  [{r.server_tool} on the server, read back by the client]"
    elif r.server_tool != call.name:
        note = f"  [server tool: {r.server_tool}]"
    return f"{call.name}({args}){note}"


def _task_line(t: Mapping[str, Any]) -> str:
    return f"{t.get('task_id', '?')}  {str(t.get('status', '?')):<9}  {t.get('title', '')}"


def _create_task(r: Any) -> list[str]:
    return [f"created task {r.get('task_id')}: {r.get('title', '')!r} ({r.get('status', '?')}, "
            f"codebase {r.get('codebase_id', '?')})"]


def _get_task(r: Any) -> list[str]:
    lines = [f"task {r.get('task_id')}: {r.get('title', '')!r}",
             f"  status {r.get('status')}, agent {r.get('agent_type')}, priority {r.get('priority')}, "
             f"codebase {r.get('codebase_id')}, created {r.get('created_at')}"]
    for key in ("result", "error"):
        if r.get(key):
            lines.append(f"  {key}: {r[key]}")
    return lines


def _list_tasks(r: Any) -> list[str]:
    tasks = r.get("tasks") or []
    return [f"{len(tasks)} task{'s' * (len(tasks) != 1)}"] + [f"  {_task_line(t)}" for t in tasks]


def _cancel_task(r: Any) -> list[str]:
    return [f"task {r.get('task_id')}: {r.get('status', 'cancelled')}"]


def _discover_agents(r: Any) -> list[str]:
    agents = r.get("agents") or []
    lines = [f"{len(agents)} agent{'s' * (len(agents) != 1)}"]
    return lines + [f"  {a.get('role') or a.get('name')}: {a.get('description', '')}" for a in agents]


def _send_message(r: Any) -> list[str]:
    routing = r.get("routing") or {}
    return [f"sent to {routing.get('target_agent_name', '?')}: task {r.get('task_id')} ({r.get('status')}), "
            f"conversation {r.get('conversation_id')}"]


def _message_line(m: Mapping[str, Any]) -> str:
    who = m.get("from") or m.get("agent_name") or m.get("type")
    return f"  [{str(m.get('timestamp', ''))[:19]}] {who}: {m.get('content', '')}"


def _history(r: Any) -> list[str]:
    messages = r.get("messages") or []
    if not messages:
        return ["no messages in this session (check the session id: sessions are conversation ids)"]
    return [f"{len(messages)} message{'s' * (len(messages) != 1)}"] + [_message_line(m) for m in messages]


def _playback(r: Any) -> list[str]:
    if r.get("style") == "summary":
        return [f"session {r.get('session_id')}, summary:"] + [f"  {line}" for line in r["summary"].splitlines()]
    return [f"session {r.get('session_id')}, word for word:"] + _history(r)


SHOW: dict[str, Callable[[Any], list[str]]] = {
    "create_task": _create_task, "get_task": _get_task, "list_tasks": _list_tasks, "cancel_task": _cancel_task,
    "discover_agents": _discover_agents, "send_message": _send_message, "get_session_history": _history,
    "playback_session": _playback,
}


def describe_result(res: CallResult) -> list[str]:
    """The lines that show one carried-out call (its answer, or that it was skipped)."""
    if res.skipped:
        return ["skipped: not confirmed (nothing sent)"]
    show = SHOW.get(res.call.name)
    if show is None or not isinstance(res.result, Mapping):
        return json.dumps(res.result, indent=2, ensure_ascii=False).splitlines()
    try:
        return show(res.result)
    except (KeyError, TypeError, AttributeError):  # an answer of another shape: show it whole rather than fail
        return json.dumps(res.result, indent=2, ensure_ascii=False).splitlines()

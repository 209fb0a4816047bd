"""Our 8 tools onto the CodeTether server's: the one table of routes, the drift check against ``tools/list``, and
``playback_session``, which the server has no tool for and the client emulates.

| ours | the server's call |
|---|---|
| create_task, list_tasks, get_task, cancel_task, discover_agents | the same tool, the same arguments |
| send_message(agent_name, message) | ``send_to_agent`` (the server's own ``send_message`` talks to the server) |
| get_session_history(session_id) | ``get_messages`` with ``conversation_id`` = session_id |
| playback_session(session_id, style) | ``get_messages`` as above, then read back on the client: ``verbatim``, the
  messages in order; ``summary``, a short digest |

A tool that is not in :data:`ROUTES` (a tools file with other tools) goes to the server tool of its own name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..format import Call
from ..tools import tool_map

#: ``get_messages`` returns 50 messages unless told otherwise; a session's history should come back whole.
HISTORY_LIMIT = 1000
#: Calls that change something that cannot be undone: ``tether-tune run`` asks first (unless ``--yes``).
CONFIRM_TOOLS = frozenset({"cancel_task"})
PLAYBACK_STYLES = ("verbatim", "summary")


@dataclass(frozen=True)
class Route:
    """How one of our tools is carried out on the server."""

    server_tool: str
    rename: Mapping[str, str] = field(default_factory=dict)  # our argument -> the server's
    drop: tuple[str, ...] = ()  # our arguments the client uses itself (not sent)
    extra: Mapping[str, Any] = field(default_factory=dict)  # arguments the client adds
    emulated: str = ""  # what the client does with the result (a key of POSTPROCESS); "" = shown as is


_HISTORY = dict(rename={"session_id": "conversation_id"}, extra={"limit": HISTORY_LIMIT})
ROUTES: dict[str, Route] = {
    "send_message": Route("send_to_agent"),
    "get_session_history": Route("get_messages", **_HISTORY),
    "playback_session": Route("get_messages", drop=("style",), emulated="playback", **_HISTORY),
}


@dataclass
class ServerCall:
    """What goes over the wire for one of our calls: ``tools/call`` of ``name`` with ``arguments``."""

    name: str
    arguments: dict[str, Any]


def route(tool: str) -> Route:
    return ROUTES.get(tool, Route(tool))


def to_server(call: Call) -> ServerCall:
    """Our call as the server's ``tools/call`` (renamed, client-side arguments dropped, extras added)."""
    r = route(call.name)
    args = {r.rename.get(k, k): v for k, v in call.arguments.items() if k not in r.drop}
    return ServerCall(r.server_tool, {**args, **r.extra})


def needs_confirmation(call: Call) -> bool:
    return call.name in CONFIRM_TOOLS


# --------------------------------------------------------------------------------------------------------------
# Results: what the client does after the server answered
# --------------------------------------------------------------------------------------------------------------


def session_messages(result: Any) -> list[dict[str, Any]]:
    """``get_messages``' messages in the order they were said (by timestamp; the server's order breaks ties)."""
    messages = result.get("messages") if isinstance(result, Mapping) else None
    if not isinstance(messages, list):
        return []
    return sorted((m for m in messages if isinstance(m, Mapping)), key=lambda m: str(m.get("timestamp", "")))


def speaker(message: Mapping[str, Any]) -> str:
    return str(message.get("agent_name") or message.get("type") or "unknown")


def _clip(text: str, n: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def summarize(messages: Sequence[Mapping[str, Any]]) -> str:
    """A short digest of a session: how many messages, from whom, over what time, its first and last words."""
    if not messages:
        return "no messages"
    who = Counter(speaker(m) for m in messages)
    people = ", ".join(f"{name} ({n})" for name, n in who.most_common())
    start, end = str(messages[0].get("timestamp", "?")), str(messages[-1].get("timestamp", "?"))
    lines = [f"{len(messages)} message{'s' * (len(messages) != 1)} from {people}, {start[:19]} to {end[:19]}.",
             f"First, {speaker(messages[0])}: {_clip(messages[0].get('content', ''))}"]
    if len(messages) > 1:
        lines.append(f"Last, {speaker(messages[-1])}: {_clip(messages[-1].get('content', ''))}")
    return "\n".join(lines)


def _playback(call: Call, result: Any) -> dict[str, Any]:
    messages = session_messages(result)
    style = call.arguments.get("style", "verbatim")
    out: dict[str, Any] = {"session_id": call.arguments.get("session_id"), "style": style,
                           "message_count": len(messages)}
    if style == "summary":
        out["summary"] = summarize(messages)
    else:
        out["messages"] = [{"timestamp": m.get("timestamp"), "from": speaker(m), "type": m.get("type"),
                            "content": m.get("content", "")} for m in messages]
    return out


POSTPROCESS: dict[str, Callable[[Call, Any], Any]] = {"playback": _playback}


def from_server(call: Call, result: Any) -> Any:
    """The result of our call: the server's result, or what the client makes of it (playback)."""
    emulated = route(call.name).emulated
    return POSTPROCESS[emulated](call, result) if emulated else result


# --------------------------------------------------------------------------------------------------------------
# Drift: does the server still have what our tools need?
# --------------------------------------------------------------------------------------------------------------


@dataclass
class DriftProblem:
    tool: str  # our tool
    message: str
    blocking: bool  # True: a call of this tool would fail or do something else; refused before it is sent


@dataclass
class Drift:
    problems: list[DriftProblem] = field(default_factory=list)

    def blocking(self, tool: str) -> list[DriftProblem]:
        return [p for p in self.problems if p.tool == tool and p.blocking]

    @property
    def warnings(self) -> list[DriftProblem]:
        return [p for p in self.problems if not p.blocking]

    def report(self) -> str:
        return "\n".join(f"  {'ERROR' if p.blocking else 'warning'}: {p.message}" for p in self.problems)


def _types_agree(ours: str, theirs: str) -> bool:
    return ours == theirs or (ours, theirs) == ("integer", "number") or not ours or not theirs


def _argument_problems(tool: str, r: Route, ours: Mapping[str, Any], schema: Mapping[str, Any]) -> list[DriftProblem]:
    props: Mapping[str, Any] = schema.get("properties") or {}
    our_props: Mapping[str, Any] = (ours.get("parameters") or {}).get("properties") or {}
    our_required = set((ours.get("parameters") or {}).get("required") or [])
    where = f"{tool} (server tool {r.server_tool})"
    sent = {r.rename.get(k, k): (k, p) for k, p in our_props.items() if k not in r.drop}
    problems: list[DriftProblem] = []
    for arg in r.extra:
        if arg not in props:
            problems.append(DriftProblem(tool, f"{where}: the server no longer takes {arg!r}, which the client adds "
                                               f"(update ROUTES in tether_tune/dispatch/mapping.py)", True))
    for arg, (our_arg, prop) in sent.items():
        theirs = props.get(arg)
        if theirs is None:
            problems.append(DriftProblem(tool, f"{where}: argument {our_arg!r} is gone from the server's tool "
                                               f"(it takes {', '.join(props) or 'no arguments'})", True))
            continue
        ours_t, theirs_t = str(prop.get("type", "")).lower(), str(theirs.get("type", "")).lower()
        if not _types_agree(ours_t, theirs_t):
            problems.append(DriftProblem(tool, f"{where}: argument {our_arg!r} is {ours_t} in our tools but "
                                               f"{theirs_t} on the server", True))
        extra_values = [v for v in prop.get("enum") or [] if theirs.get("enum") and v not in theirs["enum"]]
        if extra_values:
            problems.append(DriftProblem(tool, f"{where}: argument {our_arg!r}: {', '.join(map(repr, extra_values))} "
                                               f"not among the server's values {theirs['enum']}", False))
    ours_sent_required = {r.rename.get(k, k) for k in our_required} | set(r.extra)
    for arg in schema.get("required") or []:
        if arg not in ours_sent_required:
            problems.append(DriftProblem(tool, f"{where}: the server requires {arg!r}, which our tool does not "
                                               "always send", True))
    return problems


def check_drift(our_tools: Sequence[Mapping[str, Any]], server_tools: Sequence[Mapping[str, Any]]) -> Drift:
    """Compare our tools, through :data:`ROUTES`, with the server's ``tools/list``: a missing tool, an argument
    gone, renamed or of another type, a newly required argument (blocking); enum values the server does not list
    (a warning: the server may still take them)."""
    theirs = {t.get("name"): t for t in server_tools if isinstance(t, Mapping)}
    drift = Drift()
    for name, fn in tool_map(our_tools).items():
        r = route(name)
        server_tool = theirs.get(r.server_tool)
        if server_tool is None:
            drift.problems.append(DriftProblem(name, f"{name}: the server has no tool {r.server_tool!r}", True))
            continue
        schema = server_tool.get("inputSchema") or server_tool.get("input_schema") or {}
        drift.problems += _argument_problems(name, r, fn, schema)
    return drift

"""The generator's vocabulary: the tools and their arguments, which slot states which argument, and the frames.

A :class:`Frame` is one phrasing template from :mod:`.templates` with its id; it knows the arguments it places
itself (by slot or by its own words), whether drawn arguments fit it, and how to phrase the rest as ``{opts}``
clauses. A :class:`Pool` is what one split may draw from: its frames and its share of each value pool.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import TetherTuneError
from . import templates, values

TOOLS = ("create_task", "list_tasks", "get_task", "cancel_task", "get_session_history", "playback_session",
         "discover_agents", "send_message")
#: Probability that each optional argument is present (every combination occurs).
PRESENCE: dict[str, dict[str, float]] = {
    "create_task": {"description": 0.15, "codebase_id": 0.4, "agent_type": 0.3, "priority": 0.4},
    "list_tasks": {"status": 0.5, "codebase_id": 0.45},
    "playback_session": {"style": 0.65},
}
ENUMS = {"status": list(values.STATUS_ADJ), "agent_type": list(values.AGENT_TYPE_WORDS),
         "style": ["verbatim", "summary"]}
SLOT_ARG = {"title": "title", "description": "description", "codebase": "codebase_id", "agent_type": "agent_type",
            "priority": "priority", "status": "status", "task_id": "task_id", "session_id": "session_id",
            "agent": "agent_name", "message": "message", "style": "style"}
ARG_SLOT = {v: k for k, v in SLOT_ARG.items()}
TOOL_ARGS = {"create_task": ("title", "description", "codebase_id", "agent_type", "priority"),
             "list_tasks": ("status", "codebase_id"), "get_task": ("task_id",), "cancel_task": ("task_id",),
             "get_session_history": ("session_id",), "playback_session": ("session_id", "style"),
             "discover_agents": (), "send_message": ("agent_name", "message")}

#: A slot in a frame: ``{name}`` or ``{name:mode}``.
SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")


class GenerateError(TetherTuneError):
    """The generator cannot produce what was asked (counts too high for the templates, a bad split)."""


@dataclass(frozen=True)
class Frame:
    """One phrasing template: its id, its text with slots, the tools it calls (in order), the enum values its own
    words state, and for a no-call frame the answer."""

    id: str
    text: str
    calls: tuple[str, ...]
    fixed: tuple[tuple[str, str], ...] = ()
    answer: str | None = None

    @property
    def slot_args(self) -> set[str]:
        return {SLOT_ARG[m.group(1)] for m in SLOT.finditer(self.text) if m.group(1) != "opts"}

    @property
    def placed(self) -> set[str]:
        """The arguments the frame states itself: by a slot or in its own words."""
        return self.slot_args | {k for k, _ in self.fixed}

    @property
    def family(self) -> str:
        """A tool name, ``parallel`` or ``no_call``."""
        return self.id.split(".", 1)[0]

    @property
    def group(self) -> str:
        """Frames are held out per group, so that every split gets frames of every kind."""
        family = self.id.rsplit(".", 1)[0]
        if len(self.calls) != 1:
            return family
        general = "{opts}" in self.text and not self.fixed and not (self.slot_args & set(PRESENCE.get(self.calls[0], {})))
        return f"{family}.{'general' if general or self.calls[0] not in PRESENCE else 'special'}"

    def fits(self, args: Mapping[str, Any]) -> bool:
        """Whether the frame can state exactly ``args``: its fixed values drawn, its slots present, and the rest
        left to ``{opts}``."""
        if any(args.get(k, "absent") != v for k, v in self.fixed):
            return False
        placed = self.placed
        return placed <= set(args) and ("{opts}" in self.text or set(args) <= placed)

    def with_opts(self, args: Mapping[str, Any], rng: random.Random) -> str:
        """Step 2: every argument the frame does not place becomes a clause; a description clause comes last."""
        if "{opts}" not in self.text:
            return self.text
        placed = self.placed
        rest = [a for a in args if a not in placed]
        rng.shuffle(rest)
        rest.sort(key=lambda a: a == "description")
        clauses = templates.CLAUSES.get(self.calls[0], {})
        parts = []
        for arg in rest:
            options = clauses[arg]
            parts.append(rng.choice(options[args[arg]] if isinstance(options, dict) else options))
        return self.text.replace("{opts}", "".join(parts))


def all_frames() -> list[Frame]:
    """Every template, with its id: ``<tool>.NN``, ``parallel.NN``, ``no_call.<kind>.NN`` (NN counts from 01)."""
    frames = []
    for tool, entries in templates.FRAMES.items():
        for i, entry in enumerate(entries, 1):
            text, fixed = (entry, {}) if isinstance(entry, str) else entry
            frames.append(Frame(f"{tool}.{i:02d}", text, (tool,), tuple(sorted(fixed.items()))))
    for i, (text, calls, *fixed) in enumerate(templates.PARALLEL, 1):
        frames.append(Frame(f"parallel.{i:02d}", text, tuple(calls), tuple(sorted((fixed[0] if fixed else {}).items()))))
    for kind, entries in templates.NO_CALL.items():
        for i, (text, answer) in enumerate(entries, 1):
            frames.append(Frame(f"no_call.{kind}.{i:02d}", text, (), (), answer))
    return frames


@dataclass
class Pool:
    """What one split may use: its frames (by family) and its share of each value pool."""

    name: str
    frames: dict[str, list[Frame]]
    tasks: list[tuple[str, str]] = field(default_factory=lambda: list(values.TASKS))
    messages_do: list[str] = field(default_factory=lambda: list(values.MESSAGES_DO))
    messages_know: list[str] = field(default_factory=lambda: list(values.MESSAGES_KNOW))
    agents: list[str] = field(default_factory=lambda: list(values.AGENTS))
    components: list[str] = field(default_factory=lambda: list(values.COMPONENTS))
    agent_areas: list[str] = field(default_factory=lambda: list(values.AGENT_AREAS))
    twins: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in templates.TWINS.items()})

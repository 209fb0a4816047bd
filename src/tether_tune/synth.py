"""Synthetic CodeTether requests, each with the exact calls (or the words) that answer it.

How one example is built (request and target can never disagree, because both come from the same values):

1. choose the arguments: which optional ones are present and the enum values and priority (``_draw``);
2. choose a phrasing template (a *frame*, ``synth_templates.FRAMES``) that fits them, and phrase every optional
   argument the frame does not place itself as a clause (``{opts}``);
3. fill the slots: ids and numbers verbatim, free text copied into the target exactly as it is written in the
   request, enum values as a word people use for them ("in progress" -> working);
4. dress the request as typed, casual or spoken text (prefixes, fillers, typos, context sentences), touching only
   the template's words, never a value.

Every example records its frame id (``Example.template``). ``generate_splits`` holds out whole frames and part of
every value pool (titles, messages, agent roles) per split, so val/test measure phrasings and values never trained on.
"""

from __future__ import annotations

import dataclasses
import random
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import synth_templates as T
from .checks import ENUM_SYNONYMS, check_example, dedupe_key
from .config import ConfigError, print_config, save_config
from .data import Example, write_jsonl
from .errors import TetherTuneError
from .format import Call
from .tools import TOOLS_HELP

TOOLS = ("create_task", "list_tasks", "get_task", "cancel_task", "get_session_history", "playback_session",
         "discover_agents", "send_message")
#: Kinds of example a count can be given for: one per tool (exactly one call of it), then these two.
FAMILIES = TOOLS + ("parallel", "no_call")
#: The default training mix: 410 examples, 12% answered in words, 7% with two calls.
DEFAULT_COUNTS: dict[str, int] = {
    "create_task": 80, "list_tasks": 50, "get_task": 35, "cancel_task": 35, "get_session_history": 30,
    "playback_session": 30, "discover_agents": 25, "send_message": 45, "parallel": 30, "no_call": 50,
}
#: Probability that each optional argument is present (every combination occurs).
PRESENCE: dict[str, dict[str, float]] = {
    "create_task": {"description": 0.35, "codebase_id": 0.4, "agent_type": 0.3, "priority": 0.4},
    "list_tasks": {"status": 0.6, "codebase_id": 0.35},
    "playback_session": {"style": 0.65},
}
ENUMS = {"status": list(T.STATUS_ADJ), "agent_type": list(T.AGENT_TYPE_WORDS), "style": ["verbatim", "summary"]}
SLOT_ARG = {"title": "title", "description": "description", "codebase": "codebase_id", "agent_type": "agent_type",
            "priority": "priority", "status": "status", "task_id": "task_id", "session_id": "session_id",
            "agent": "agent_name", "message": "message", "style": "style"}
ARG_SLOT = {v: k for k, v in SLOT_ARG.items()}
TOOL_ARGS = {"create_task": ("title", "description", "codebase_id", "agent_type", "priority"),
             "list_tasks": ("status", "codebase_id"), "get_task": ("task_id",), "cancel_task": ("task_id",),
             "get_session_history": ("session_id",), "playback_session": ("session_id", "style"),
             "discover_agents": (), "send_message": ("agent_name", "message")}
STYLES = {"typed": 0.45, "casual": 0.25, "voice": 0.30}

_SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")
#: Words that carry an enum value: never given a typo (the target's value would no longer be stated).
_PROTECTED = {w for words in ENUM_SYNONYMS.values() for s in words for w in re.split(r"[\s\-]+", s)}


def _protected(word: str) -> bool:
    """A word of an enum phrase, or one built on it ("summarized"): no typo there, no filler beside it."""
    word = word.lower()
    return word in _PROTECTED or any(word.startswith(p) for p in _PROTECTED if len(p) >= 4)


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
        return {SLOT_ARG[m.group(1)] for m in _SLOT.finditer(self.text) if m.group(1) != "opts"}

    @property
    def group(self) -> str:
        """Frames are held out per group, so that every split gets frames of every kind."""
        family = self.id.rsplit(".", 1)[0]
        if len(self.calls) != 1:
            return family
        general = "{opts}" in self.text and not self.fixed and not (self.slot_args & set(PRESENCE.get(self.calls[0], {})))
        return f"{family}.{'general' if general or self.calls[0] not in PRESENCE else 'special'}"


def all_frames() -> list[Frame]:
    """Every template, with its id: ``<tool>.NN``, ``parallel.NN``, ``no_call.<kind>.NN`` (NN counts from 01)."""
    frames = []
    for tool, entries in T.FRAMES.items():
        for i, entry in enumerate(entries, 1):
            text, fixed = (entry, {}) if isinstance(entry, str) else entry
            frames.append(Frame(f"{tool}.{i:02d}", text, (tool,), tuple(sorted(fixed.items()))))
    for i, (text, calls, *fixed) in enumerate(T.PARALLEL, 1):
        frames.append(Frame(f"parallel.{i:02d}", text, tuple(calls), tuple(sorted((fixed[0] if fixed else {}).items()))))
    for kind, entries in T.NO_CALL.items():
        for i, (text, answer) in enumerate(entries, 1):
            frames.append(Frame(f"no_call.{kind}.{i:02d}", text, (), (), answer))
    return frames


@dataclass
class Pool:
    """What one split may use: its frames (by family) and its share of each value pool."""

    name: str
    frames: dict[str, list[Frame]]
    tasks: list[tuple[str, str]] = field(default_factory=lambda: list(T.TASKS))
    messages_do: list[str] = field(default_factory=lambda: list(T.MESSAGES_DO))
    messages_know: list[str] = field(default_factory=lambda: list(T.MESSAGES_KNOW))
    agents: list[str] = field(default_factory=lambda: list(T.AGENTS))


def _family(frame: Frame) -> str:
    return frame.id.split(".", 1)[0]


# --------------------------------------------------------------------------------------------------------------
# Splits: templates and values held out
# --------------------------------------------------------------------------------------------------------------


def _partition(items: Sequence[Any], fractions: Mapping[str, float], rng: random.Random, what: str,
               optional: bool = False) -> dict[str, list[Any]]:
    """Deal ``items`` to the splits by fraction; every split with a fraction > 0 gets at least one, the first
    split (train) the rest. ``optional`` groups too small to share go to train whole."""
    names = list(fractions)
    items = list(items)
    rng.shuffle(items)
    out: dict[str, list[Any]] = {name: [] for name in names}
    sizes = {name: (max(1, round(len(items) * fractions[name])) if fractions[name] > 0 else 0) for name in names[1:]}
    if len(items) - sum(sizes.values()) < 1:
        if optional:
            out[names[0]] = items
            return out
        raise GenerateError(f"cannot split the {len(items)} {what} into {', '.join(names)}: too few to hold any out")
    start = 0
    for name in names[1:]:
        out[name] = items[start : start + sizes[name]]
        start += sizes[name]
    out[names[0]] = items[start:]
    return out


def make_pools(fractions: Mapping[str, float], seed: int) -> dict[str, Pool]:
    """One :class:`Pool` per split. With one split, it holds every frame and value."""
    frames = all_frames()
    if len(fractions) == 1:
        (name,) = fractions
        by_family: dict[str, list[Frame]] = {}
        for f in frames:
            by_family.setdefault(_family(f), []).append(f)
        return {name: Pool(name, by_family)}
    rng = random.Random(f"tether-tune/split/{seed}")
    pools = {name: Pool(name, {}) for name in fractions}
    groups: dict[str, list[Frame]] = {}
    for f in frames:
        groups.setdefault(f.group, []).append(f)
    for group in sorted(groups):
        dealt = _partition(groups[group], fractions, rng, f"{group} templates", optional=group.endswith(".special"))
        for name, fs in dealt.items():
            pools[name].frames.setdefault(group.split(".")[0], []).extend(sorted(fs, key=lambda f: f.id))
    for attr in ("tasks", "messages_do", "messages_know", "agents"):
        dealt = _partition(getattr(T, attr.upper()), fractions, rng, attr)
        for name, values in dealt.items():
            setattr(pools[name], attr, values)
    return pools


def allocate(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split a count by fractions exactly (largest remainder; ties to the earlier split)."""
    raw = {k: n * f for k, f in fractions.items()}
    out = {k: int(v) for k, v in raw.items()}
    order = sorted(fractions, key=lambda k: (-(raw[k] - out[k]), list(fractions).index(k)))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def parse_split(spec: str) -> dict[str, float]:
    """``"0.8,0.1,0.1"`` -> train/val/test; ``"0.9,0.1"`` -> train/test."""
    try:
        parts = [float(x) for x in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--split {spec!r}: expected fractions like 0.8,0.1,0.1") from None
    names = {2: ("train", "test"), 3: ("train", "val", "test")}.get(len(parts))
    if names is None:
        raise ConfigError(f"--split {spec!r}: give 2 (train,test) or 3 (train,val,test) fractions")
    if any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6 or parts[0] <= 0:
        raise ConfigError(f"--split {spec!r}: fractions must be >= 0, sum to 1, and train must be > 0")
    return dict(zip(names, parts))


# --------------------------------------------------------------------------------------------------------------
# One example
# --------------------------------------------------------------------------------------------------------------


def _codebase(rng: random.Random) -> str:
    return "global" if rng.random() < 0.15 else f"{rng.getrandbits(32):08x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _draw(tool: str, rng: random.Random) -> dict[str, Any]:
    """Step 1: the arguments present; enum values and priority chosen now (frames may state them), the rest
    (ids, text) drawn when their slot is filled. ``None`` = present, value still to draw."""
    args: dict[str, Any] = {a: None for a in TOOL_ARGS[tool] if a not in PRESENCE.get(tool, {})}
    for arg, p in PRESENCE.get(tool, {}).items():
        if rng.random() < p:
            args[arg] = None
    for arg in args:
        if arg in ENUMS:
            args[arg] = rng.choice(ENUMS[arg])
        elif arg == "priority":
            args[arg] = rng.randint(0, 10)
    return args


def _fits(frame: Frame, args: Mapping[str, Any]) -> bool:
    if any(args.get(k, "absent") != v for k, v in frame.fixed):
        return False
    placed = frame.slot_args | {k for k, _ in frame.fixed}
    return placed <= set(args) and ("{opts}" in frame.text or set(args) <= placed)


def _expand_opts(frame: Frame, args: Mapping[str, Any], rng: random.Random) -> str:
    """Step 2: every argument the frame does not place becomes a clause; a description clause comes last."""
    if "{opts}" not in frame.text:
        return frame.text
    placed = frame.slot_args | {k for k, _ in frame.fixed}
    rest = [a for a in args if a not in placed]
    rng.shuffle(rest)
    rest.sort(key=lambda a: a == "description")
    clauses = T.CLAUSES.get(frame.calls[0], {})
    parts = []
    for arg in rest:
        options = clauses[arg]
        parts.append(rng.choice(options[args[arg]] if isinstance(options, dict) else options))
    return frame.text.replace("{opts}", "".join(parts))


class _Realiser:
    """Steps 3 and 4 for one request: fills slots and dresses the template's words in one style."""

    def __init__(self, rng: random.Random, pool: Pool):
        self.rng = rng
        self.pool = pool
        self.style = rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
        self.lower_values = self.style == "voice" or (self.style == "casual" and rng.random() < 0.5)
        self.task = rng.choice(pool.tasks)

    # -- the template's words ----------------------------------------------------------------------------------
    def dress(self, text: str) -> str:
        rng, style = self.rng, self.style
        if rng.random() < 0.18:
            context = rng.choice(T.CONTEXT)
            text = f"{context} {text}" if rng.random() < 0.6 else f"{text} {context}"
        question = False
        imperative = text.startswith("^")
        while "^" in text:
            i = text.index("^")
            prefix = ""
            if rng.random() < {"typed": 0.45, "casual": 0.35, "voice": 0.5}[style]:
                options = T.PREFIXES_VOICE if style == "voice" else T.PREFIXES_TYPED
                if i > 0:  # mid-text, after a sentence: no question
                    options = [p for p in options if p.strip().lower() not in ("can you", "could you")]
                prefix = rng.choice(options)
                question |= i == 0 and prefix.strip().lower() in ("can you", "could you")
            text = text[:i] + prefix + text[i + 1 :]
        end = text[-1] if text[-1] in ".?" else ""
        body = text[: len(text) - len(end)]
        if imperative and rng.random() < 0.15:
            body += rng.choice(T.SUFFIXES)
        if question:
            end = "?"
        if style == "casual" and end == "." and rng.random() < 0.7:
            end = ""
        text = body + end
        if style == "voice":
            if rng.random() < 0.5:
                text = rng.choice(T.FILLERS_START) + text
            text = text.replace(" - ", " ")
        return text

    def literal(self, pieces: list[str]) -> list[str]:
        """Case, punctuation, fillers and typos of the template's words (``pieces``: text between slots)."""
        rng, style = self.rng, self.style
        if style == "voice":
            pieces = [re.sub(r"[,.;:!?\"()@]", "", p).lower() for p in pieces]
            # a filler never splits the words of an enum phrase ("full transcript", "word for word")
            spots = [(i, m.start()) for i, p in enumerate(pieces) for m in re.finditer(r"(?<=(\w)) (?=(\w+))", p)
                     if not (_protected(p[: m.start()].split()[-1]) or _protected(m.group(2)))]
            if spots and rng.random() < 0.35:
                i, at = rng.choice(spots)
                pieces[i] = pieces[i][:at] + f" {rng.choice(T.FILLERS_MID)} " + pieces[i][at + 1 :]
        elif style == "casual" and rng.random() < 0.6:
            pieces = [p.lower() for p in pieces]
        if style != "voice" and rng.random() < (0.3 if style == "casual" else 0.1):
            words = [(i, m) for i, p in enumerate(pieces) for m in re.finditer(r"[A-Za-z]{4,}", p)
                     if not _protected(m.group())]
            if words:
                i, m = rng.choice(words)
                pieces[i] = pieces[i][: m.start()] + _typo(m.group(), rng) + pieces[i][m.end() :]
        if style == "typed":
            pieces = [re.sub(r"((?:^|[.?!]\s+))([a-z])", lambda m: m.group(1) + m.group(2).upper(), p) if i == 0
                      else re.sub(r"([.?!]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), p)
                      for i, p in enumerate(pieces)]
        return pieces

    # -- the values ----------------------------------------------------------------------------------------------
    def _text_value(self, value: str, bare: bool) -> str:
        if self.lower_values:
            value = value.lower()
        elif bare:
            value = value[0].lower() + value[1:]
        if self.style == "voice":
            value = re.sub(r"[,.;:!?\"](?=\s|$)", "", value)
        return value

    def _quoted(self, value: str, p: float) -> str:
        if self.style != "voice" and self.rng.random() < p:
            q = '"' if self.rng.random() < 0.7 else "'"
            return f"{q}{value}{q}"
        return value

    def slot(self, name: str, mode: str | None, args: dict[str, Any]) -> tuple[str, Any]:
        """(what the request says, what the target gets) for one slot."""
        rng, pool = self.rng, self.pool
        arg = SLOT_ARG[name]
        value = args.get(arg)
        if name in ("title", "description"):
            v = self._text_value(self.task[0] if name == "title" else self.task[1], mode == "bare")
            return self._quoted(v, 0.5 if name == "title" else 0.2) if mode != "bare" else v, v
        if name == "message":
            source = {"do": pool.messages_do, "know": pool.messages_know}.get(mode or "", pool.messages_do + pool.messages_know)
            v = self._text_value(rng.choice(source), mode is not None)
            return (v if mode else self._quoted(v, 0.35)), v
        if name in ("task_id", "session_id"):
            v = _uuid(rng)
            return (f"`{v}`" if self.style == "typed" and rng.random() < 0.1 else v), v
        if name == "codebase":
            v = _codebase(rng)
            return v, v
        if name == "agent":
            v = rng.choice(pool.agents)
            said = v.replace("-", " ") if self.style == "voice" and rng.random() < 0.6 else v
            return said, v
        if name == "priority":
            return str(value), value
        if name == "status":
            return rng.choice((T.STATUS_PRED if mode == "pred" else T.STATUS_ADJ)[value]), value
        if name == "agent_type":
            word = rng.choice(T.AGENT_TYPE_WORDS[value])
            if mode == "an":
                word = ("an " if word[0] in "aeiou" else "a ") + word
            return word, value
        raise GenerateError(f"unknown slot {{{name}}}")

    def realise(self, text: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The request, and the target's value for every argument it states."""
        text = self.dress(text)
        pieces = _SLOT.split(text)  # [literal, name, mode, literal, name, mode, ..., literal]
        literals = self.literal(pieces[0::3])
        out: list[str] = []
        said: list[str] = []
        values: dict[str, Any] = {}
        for i, lit in enumerate(literals):
            out.append(lit)
            if i < len(literals) - 1:
                name, mode = pieces[3 * i + 1], pieces[3 * i + 2]
                surface, values[SLOT_ARG[name]] = self.slot(name, mode, args)
                out.append(f"\x00{len(said)}\x00")  # a placeholder: the clean-up below never touches a value
                said.append(surface)
        joined = re.sub(r"\s+", " ", "".join(out))
        joined = re.sub(r" ([,.?!:])", r"\1", joined)
        joined = re.sub(r"([,.?!])[,.]+", r"\1", joined).strip()
        request = re.sub("\x00(\\d+)\x00", lambda m: said[int(m.group(1))], joined)
        return request, values


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    op = rng.randrange(3)
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def enum_words(request: str, value: str) -> list[str]:
    """The words for an enum value that ``request`` uses (at the start of a word: "summarized" says summarize)."""
    low = request.lower()
    return [w for w in ENUM_SYNONYMS.get(value, (value,)) if re.search(rf"(?<![a-z]){re.escape(w)}", low)]


def unstated_enum_words(request: str, calls: Sequence[Call]) -> list[str]:
    """Words for an enum value when the target has no such argument ("show me what's done" must filter on
    completed): a request like that teaches the model to drop what was said."""
    found = []
    for call in calls:
        checks = {"list_tasks": ("status",), "playback_session": ("style",)}.get(call.name, ())
        if call.name == "create_task" and len(calls) == 1:
            checks = ("agent_type",)  # in two-call requests an agent role ("builder") may name one
        for arg in checks:
            if arg not in call.arguments:
                found += [w for v in ENUMS[arg] for w in enum_words(request, v)]
    return found


def make_example(family: str, rng: random.Random, pool: Pool) -> Example | None:
    """One example of ``family`` (a tool name, ``parallel`` or ``no_call``) from ``pool``; ``None`` when the drawn
    arguments fit none of the pool's frames (the caller draws again)."""
    frames = pool.frames.get(family, [])
    if family == "no_call":
        kinds = sorted({f.id.split(".")[1] for f in frames})
        kind = rng.choices(kinds, weights=[T.NO_CALL_WEIGHTS[k] for k in kinds])[0]
        frame = rng.choice([f for f in frames if f.id.split(".")[1] == kind])
        r = _Realiser(rng, pool)
        request, values = r.realise(frame.text, {})
        answer = re.sub(r"\{(\w+)\}", lambda m: str(values[SLOT_ARG[m.group(1)]]), frame.answer or "")
        return Example(request=request, calls=[], text=answer, template=frame.id)
    if family == "parallel":
        frame = rng.choice(frames)
        args = {a: None for a in frame.slot_args} | dict(frame.fixed)
        for a in args:
            if a in ENUMS and args[a] is None:
                args[a] = rng.choice(ENUMS[a])
            elif a == "priority":
                args[a] = rng.randint(0, 10)
        text = frame.text
    else:
        args = _draw(family, rng)
        fitting = [f for f in frames if _fits(f, args)]
        if not fitting:
            return None
        frame = rng.choice(fitting)
        text = _expand_opts(frame, args, rng)
    r = _Realiser(rng, pool)
    request, values = r.realise(text, args)
    # Every argument drawn is stated: by a slot (its realised value), by the frame's own words or an {opts} clause
    # (the enum value drawn). Nothing else goes into the target.
    calls = [Call(tool, {a: values.get(a, args[a]) for a in TOOL_ARGS[tool] if a in args}) for tool in frame.calls]
    for call in calls:
        if any(v is None for v in call.arguments.values()) or set(values) - set(args):
            raise GenerateError(f"template {frame.id}: slots and arguments disagree ({call}, slots {sorted(values)})")
    unstated = unstated_enum_words(request, calls)
    if unstated:
        raise GenerateError(f"template {frame.id}: the request says {unstated!r} but the target has no such argument: {request!r}")
    return Example(request=request, calls=calls, template=frame.id)


# --------------------------------------------------------------------------------------------------------------
# Many examples
# --------------------------------------------------------------------------------------------------------------


def resolve_counts(counts: Mapping[str, int | None] | None) -> dict[str, int]:
    """Given counts over the defaults; ``None`` means the default. Unknown names and negatives are errors."""
    out = dict(DEFAULT_COUNTS)
    for name, n in (counts or {}).items():
        if name not in out:
            raise GenerateError(f"unknown count {name!r}: expected one of {', '.join(FAMILIES)}")
        if n is not None:
            if n < 0:
                raise GenerateError(f"count {name!r} must be >= 0 (got {n})")
            out[name] = int(n)
    return out


def family_of(example: Example) -> str:
    """The count an example belongs to: its tool, ``parallel`` (several calls) or ``no_call``."""
    if not example.calls:
        return "no_call"
    return example.calls[0].name if len(example.calls) == 1 else "parallel"


def generate_splits(
    counts: Mapping[str, int | None] | None = None,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, list[Example]]:
    """Examples per split, exactly ``counts`` in all (each count dealt to the splits by fraction), no duplicates
    anywhere. Each split uses only its own frames and its own share of titles, messages and agent roles.
    With ``tools``, every example is checked (schema and grounding) and a failure raises :class:`GenerateError`."""
    fractions = dict(fractions or {"all": 1.0})
    totals = resolve_counts(counts)
    pools = make_pools(fractions, seed)
    seen: dict[str, str] = {}
    out: dict[str, list[Example]] = {}
    for split, pool in pools.items():
        examples: list[Example] = []
        for family, total in totals.items():
            n = allocate(total, fractions)[split]
            rng = random.Random(f"tether-tune/{seed}/{split}/{family}")
            made, attempts, limit = 0, 0, 40 * n + 400
            while made < n:
                attempts += 1
                if attempts > limit:
                    raise GenerateError(
                        f"made only {made} distinct {family} examples of the {n} asked for the {split!r} split "
                        f"(its {len(pool.frames.get(family, []))} templates ran out of new requests): ask for fewer"
                    )
                ex = make_example(family, rng, pool)
                if ex is None:
                    continue
                key = dedupe_key(ex)
                if key in seen:
                    continue
                if tools is not None:
                    problems = check_example(ex, tools)
                    if problems:
                        raise GenerateError(f"template {ex.template} made a bad example ({'; '.join(problems)}): {ex.request!r}")
                seen[key] = split
                examples.append(ex)
                made += 1
        random.Random(f"tether-tune/{seed}/{split}/order").shuffle(examples)
        prefix = "gen" if split == "all" else split
        for i, ex in enumerate(examples, 1):
            ex.id = f"{prefix}-{i:05d}"
        out[split] = examples
    return out


def generate_examples(
    counts: Mapping[str, int | None] | None = None,
    seed: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[Example]:
    """``counts`` examples (per tool: examples whose answer is exactly one call of it; ``parallel``: two calls;
    ``no_call``: answered in words), unspecified ones at ``DEFAULT_COUNTS``. Same seed, same list."""
    return generate_splits(counts, seed, None, tools)["all"]


def split_problems(splits: Mapping[str, Sequence[Example]]) -> list[str]:
    """Leaks between splits: a template of a held-out split (any but ``train``) seen in train, or the same request
    in two splits. Empty when the split is clean."""
    problems = []
    train = splits.get("train", [])
    train_templates = {ex.template for ex in train if ex.template}
    where: dict[str, str] = {}
    for name, examples in splits.items():
        for ex in examples:
            if name != "train" and ex.template in train_templates:
                problems.append(f"{name} example {ex.id or ex.request!r}: template {ex.template} is also in train")
            key = dedupe_key(ex)
            if key in where and where[key] != name:
                problems.append(f"{name} example {ex.id or ex.request!r}: the same request is in {where[key]}")
            where.setdefault(key, name)
    return problems


def duplicate_problems(examples: Sequence[Example]) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, ex in enumerate(examples):
        key = dedupe_key(ex)
        if key in seen:
            problems.append(f"example {i} duplicates example {seen[key]}: {ex.request!r}")
        seen.setdefault(key, i)
    return problems


def to_record(example: Example, fmt: str) -> dict[str, Any]:
    """One output line: ``original`` (input/output), ``messages`` (chat) or ``gold`` (acceptable values), each
    with the example's ``id`` and ``template``."""
    if fmt == "original":
        rec = example.to_original()
    elif fmt == "messages":
        rec = example.to_messages()
    elif fmt == "gold":
        rec = example.to_gold()
        if not example.calls:
            rec["answer"] = example.text
    else:
        raise ValueError(f"unknown format {fmt!r}")
    rec["id"] = example.id
    rec["template"] = example.template
    return rec


# --------------------------------------------------------------------------------------------------------------
# The command: `python generate_dataset.py` / `tether-tune generate`
# --------------------------------------------------------------------------------------------------------------


def _count(name: str) -> Any:
    return field(default=None, metadata={
        "help": f"examples answered by one {name} call; left out: {DEFAULT_COUNTS[name]}", "metavar": "N"})


@dataclass
class GenerateConfig:
    """Generate CodeTether requests with the exact calls that answer them (or a text answer)."""

    output: str = field(default="data/generated.jsonl", metadata={"help": "JSONL file to write (atomically)"})
    create_task: int | None = _count("create_task")
    list_tasks: int | None = _count("list_tasks")
    get_task: int | None = _count("get_task")
    cancel_task: int | None = _count("cancel_task")
    get_session_history: int | None = _count("get_session_history")
    playback_session: int | None = _count("playback_session")
    discover_agents: int | None = _count("discover_agents")
    send_message: int | None = _count("send_message")
    parallel: int | None = field(default=None, metadata={
        "help": f"examples whose request asks for two calls; left out: {DEFAULT_COUNTS['parallel']}", "metavar": "N"})
    no_call: int | None = field(default=None, metadata={
        "help": f"requests no tool serves, answered in words; left out: {DEFAULT_COUNTS['no_call']}", "metavar": "N"})
    seed: int = field(default=0, metadata={"help": "random seed: the same seed writes the same bytes"})
    split: str = field(default="", metadata={
        "help": "train,val,test fractions (e.g. 0.8,0.1,0.1; or train,test: 0.9,0.1): writes STEM.train.jsonl, "
                "STEM.val.jsonl, STEM.test.jsonl instead of --output; held-out splits get templates and values "
                "never seen in train"})
    split_dir: str | None = field(default=None, metadata={"help": "folder for the split files (default: beside --output)"})
    format: str = field(default="original", metadata={
        "help": "original ({input, output}), messages (chat) or gold ({query, calls})",
        "choices": ["original", "messages", "gold"]})
    tools: str | None = field(default=None, metadata={"help": TOOLS_HELP + "; every example is checked against it"})

    def counts(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in FAMILIES}

    def validate(self) -> None:
        for name, n in self.counts().items():
            if n is not None and n < 0:
                raise ConfigError(f"--{name} must be >= 0 (got {n})")
        if self.split:
            parse_split(self.split)
        elif self.split_dir:
            raise ConfigError("--split_dir needs --split")
        if not self.output.endswith(".jsonl"):
            raise ConfigError(f"--output {self.output!r}: expected a .jsonl file name")


def output_paths(cfg: GenerateConfig) -> dict[str, Path]:
    out = Path(cfg.output)
    if not cfg.split:
        return {"all": out}
    folder = Path(cfg.split_dir) if cfg.split_dir else out.parent
    stem = out.name[: -len(".jsonl")]
    return {name: folder / f"{stem}.{name}.jsonl" for name in parse_split(cfg.split)}


def run_generate(cfg: GenerateConfig) -> int:
    from .tools import load_tools

    cfg.validate()
    # The resolved config (defaults filled in) is printed and saved: it says exactly what was generated.
    cfg = dataclasses.replace(cfg, **resolve_counts(cfg.counts()))
    print_config(cfg)
    tools = load_tools(cfg.tools)
    fractions = parse_split(cfg.split) if cfg.split else None
    splits = generate_splits(cfg.counts(), cfg.seed, fractions, tools)
    paths = output_paths(cfg)
    width = max(len(f) for f in FAMILIES)
    for name, examples in splits.items():
        if not examples and name != "all":
            continue
        n = write_jsonl(paths[name], (to_record(ex, cfg.format) for ex in examples))
        per = {f: 0 for f in FAMILIES}
        for ex in examples:
            per[family_of(ex)] += 1
        templates = len({ex.template for ex in examples})
        print(f"wrote {n} examples ({templates} templates) to {paths[name]}")
        for f in FAMILIES:
            print(f"  {f:<{width}} {per[f]:>6}")
    save_config(cfg, next(iter(paths.values())).parent / f"{Path(cfg.output).name[: -len('.jsonl')]}.config.json")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``generate_dataset.py``: the ``generate`` command under the original script's name."""
    from .cli import run_cli

    return run_cli("generate", list(sys.argv[1:] if argv is None else argv), prog="generate_dataset.py")


if __name__ == "__main__":
    sys.exit(main())

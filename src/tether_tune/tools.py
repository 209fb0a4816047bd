"""Tool schemas: loading and checking a tools file, validating calls against it, coercing model output, and
reading a model turn (parse -> coerce -> validate) the one way every stage reads it.

CodeTether's 8 tools ship with the package (``resources/codetether_tools.json``, the same file as the
repository's root ``codetether_tools.json``) and are the default wherever a tools file is needed, so every
command works from any directory.

A tools file is a JSON list in the form chat templates take: ``{"type": "function", "function": {"name",
"description", "parameters": {"type": "object", "properties": {...}, "required": [...]}}}``. Tools are kept as
plain dicts so they can go straight into ``render_conversation`` or ``apply_chat_template``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ToolsError
from .format import Call
from .parse import parse_output

#: The name of CodeTether's tools file (at the repository root, and shipped inside the package).
DEFAULT_TOOLS_FILE = "codetether_tools.json"
#: The help of every command's ``--tools`` flag.
TOOLS_HELP = "tools file (JSON list of tool schemas); default: CodeTether's 8 tools, shipped with tether-tune"
TYPES = ("string", "integer", "number", "boolean", "array", "object")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


def packaged_tools_path() -> Path:
    """The CodeTether tools file shipped inside the package (works from any directory, installed or not)."""
    return Path(str(resources.files("tether_tune") / "resources" / DEFAULT_TOOLS_FILE))


def _fn(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    return tool["function"] if "function" in tool else tool


def _parameter_problems(params: Mapping[str, Any], where: str) -> list[str]:
    """What is wrong with one tool's ``parameters`` (properties, types, descriptions, enums, required)."""
    problems: list[str] = []
    props = params.get("properties", {}) or {}
    if not isinstance(props, Mapping):
        return [f"{where}: parameters.properties must be an object"]
    for pname, prop in props.items():
        pwhere = f"{where}: parameter {pname!r}"
        if not _IDENT.match(str(pname)):
            problems.append(f"{pwhere}: not an identifier")
        if not isinstance(prop, Mapping):
            problems.append(f"{pwhere}: expected an object")
            continue
        ptype = str(prop.get("type", "")).lower()
        if ptype not in TYPES:
            problems.append(f"{pwhere}: unknown type {prop.get('type')!r} (one of {', '.join(TYPES)})")
        if "description" not in prop:
            problems.append(f"{pwhere}: no description (FunctionGemma's rendering of that is undefined)")
        enum = prop.get("enum")
        if enum is not None and (not isinstance(enum, list) or not enum):
            problems.append(f"{pwhere}: enum must be a non-empty list")
    required = params.get("required", []) or []
    if not isinstance(required, list):
        return problems + [f"{where}: parameters.required must be a list"]
    problems += [f"{where}: required argument {r!r} is not among the properties" for r in required if r not in props]
    return problems


def check_tools(tools: Any, source: str = "<tools>") -> list[dict[str, Any]]:
    """Check a list of tool definitions; return them normalised to ``{"type": "function", "function": ...}``."""
    if not isinstance(tools, list) or not tools:
        raise ToolsError(f"{source}: expected a non-empty JSON list of tools")
    problems: list[str] = []
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"{source}: tool {i}"
        if not isinstance(tool, Mapping):
            problems.append(f"{where}: expected an object, got {type(tool).__name__}")
            continue
        if tool.get("type", "function") != "function":
            problems.append(f"{where}: field 'type' must be \"function\"")
        fn = _fn(tool)
        if not isinstance(fn, Mapping):
            problems.append(f"{where}: field 'function' must be an object")
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not _IDENT.match(name):
            problems.append(f"{where}: field 'name' is missing or not an identifier ({name!r})")
            continue
        where = f"{source}: tool {i} ({name})"
        if name in seen:
            problems.append(f"{where}: duplicate tool name {name!r}")
        seen.add(name)
        if not isinstance(fn.get("description", ""), str):
            problems.append(f"{where}: field 'description' must be text")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, Mapping):
            problems.append(f"{where}: field 'parameters' must be an object")
            continue
        if str(params.get("type", "object")).lower() != "object":
            problems.append(f"{where}: parameters.type must be \"object\"")
        problems += _parameter_problems(params, where)
        out.append({"type": "function", "function": dict(fn)})
    if problems:
        raise ToolsError("invalid tools:\n  " + "\n  ".join(problems))
    return out


def load_tools(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Load and check a tools file (default: CodeTether's, shipped with the package); raise :class:`ToolsError`
    naming the file and the field at fault."""
    path = packaged_tools_path() if path is None else Path(path).expanduser()
    if path.is_dir():
        raise ToolsError(f"{path}: is a directory; give a tools JSON file (pass --tools PATH)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolsError(f"{path}: no such tools file (pass --tools PATH)") from None
    except json.JSONDecodeError as err:
        raise ToolsError(f"{path}: line {err.lineno} column {err.colno}: not valid JSON: {err.msg}") from None
    return check_tools(data, str(path))


def tool_map(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """name -> the function dict (with ``parameters``)."""
    return {_fn(t)["name"]: _fn(t) for t in tools}


def _properties(fn: Mapping[str, Any]) -> Mapping[str, Any]:
    return (fn.get("parameters") or {}).get("properties") or {}


def _type_error(value: Any, ptype: str) -> str | None:
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }.get(ptype, True)
    return None if ok else f"expected {ptype}, got {type(value).__name__} {value!r}"


def grounding_kind(key: str, schema: Mapping[str, Any]) -> str | None:
    """How a string argument must be stated in its request — the one rule for the data checks
    (``checks.grounding_problems``) and grounded decoding (``constrain``): ``"id"`` (a key ending in ``_id``: copied
    verbatim), ``"name"`` (ending in ``_name``: its words, spaces or hyphens aside), ``"text"`` (any other string:
    the request's words). None: an enum or a non-string, which the schema alone constrains."""
    if schema.get("enum") or str(schema.get("type", "")).lower() != "string":
        return None
    if key.endswith("_id"):
        return "id"
    if key.endswith("_name"):
        return "name"
    return "text"


#: Words people use for enum values; a value is stated when the request names it or one of these (the labelling
#: rule the data checks enforce, and the one grounded decoding decodes by: ``enum_stated``).
ENUM_SYNONYMS: dict[str, tuple[str, ...]] = {
    "pending": ("pending", "queued", "waiting", "not started", "hasn't started", "not yet started"),
    "working": ("working", "running", "in progress", "in-progress", "active", "ongoing", "being worked on"),
    "completed": ("completed", "complete", "done", "finished", "succeeded", "successful"),
    "failed": ("failed", "failing", "errored", "broken", "broke", "crashed", "failures"),
    "cancelled": ("cancelled", "canceled", "aborted", "called off"),
    "verbatim": ("verbatim", "word for word", "word-for-word", "exact", "exactly", "full transcript", "in full",
                 "everything", "every word"),
    "summary": ("summary", "summaries", "summarize", "summarise", "recap", "overview", "gist", "short version",
                "tl;dr", "tldr", "brief"),
    "build": ("build", "builder", "building"),
    "plan": ("plan", "planner", "planning"),
    "general": ("general", "general-purpose", "generic"),
    "explore": ("explore", "explorer", "exploration", "exploring"),
    "forage": ("forage", "forager", "foraging"),
}


#: What people say when they ask for each CodeTether tool, one regular expression per tool, matched on a clause of
#: the request, lower-cased (``constrain.unspent_cues``: after a call, a clause that still asks for a tool no call
#: has answered means another call is due: "cancel A and tell the build-bot it is off"). Not a classifier: a cue
#: only weighs two calibrated decisions, between another call and the end of the calls, and at a call's tool name
#: between the tools asked for and the others (``constrain.asked_tools``). A playback style's words ("gist",
#: "word for word") ask for playback_session.
TOOL_CUES: dict[str, str] = {
    "send_message": (r"\b(?:tell(?! me\b)|dm|ping|notify|ask(?! for\b)|send(?! me\b)|send_message"
                     r"|let (?!me\b)\S+ know)\b"),
    "create_task": (r"\b(?:create|new task|new one|add a task|make a task|open a task|file a task|spin up|queue up"
                    r"|create_task)\b|\btask:"),
    "cancel_task": r"\b(?:cancel|abort|kill|stop|call (?:it |that |this )?off|drop|cancel_task)\b",
    # "list" of agents or of messages ("the raw message list") is not list_tasks.
    "list_tasks": (r"(?<!message )\blist(?:_tasks)?\b"
                   r"(?! (?:of |the |all )?(?:the )?(?:available )?(?:agents|messages))"
                   r"|\ball (?:the |my )?tasks\b"
                   r"|\b(?:pending|queued|running|working|completed|done|finished|failed|cancell?ed|active) tasks\b"),
    "get_task": (r"\b(?:status (?:of|on|for)|details|where are we|how is|how's|check on|check (?:up on )?(?:the )?task"
                 r"|(?<!in )progress|done yet|get_task)\b"),
    "get_session_history": r"\b(?:history|conversation|chat log|log of|logs? for|get_session_history)\b",
    "playback_session": (r"\b(?:replay|play back|playback|recap|summari[sz]e|summar(?:y|ies)|overview|gist"
                         r"|short version|tl;?dr|verbatim|word[- ]for[- ]word|playback_session)\b"),
    "discover_agents": r"\b(?:agents|discover_agents)\b",
}


def enum_stated(value: Any, request: str) -> bool:
    """Whether ``request`` states the enum value ``value``: its name or one of its ``ENUM_SYNONYMS``, as whole words
    (and their inflections), case aside: "summarized" states ``summary``, but "rebuild" does not state ``build``,
    nor does "abandoned" say "done". A non-string value (a number, a boolean) is never stated this way."""
    if not isinstance(value, str):
        return False
    low = request.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(n.lower())}(?:s|d|ed|ing)?(?![a-z0-9])", low)
               for n in ENUM_SYNONYMS.get(value, (value,)))


#: A UUID's text, either case (grounded decoding finds them in requests with it too: ``constrain.id_spans``).
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_SHAPE = re.compile(UUID_PATTERN)


#: "N hex chars" in an id's description: its shape (CodeTether's codebase_id, "8 hex chars").
_HEXES = re.compile(r"\b(\d+) hex\b", re.I)


def _is_uuid(schema: Mapping[str, Any]) -> bool:
    """An id the schema declares a UUID: ``format: uuid``, or "UUID" in its description."""
    described = str(schema.get("description", ""))
    return str(schema.get("format", "")).lower() == "uuid" or re.search(r"\bUUIDs?\b", described, re.I) is not None


def id_fits(value: str, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` has the shape an id argument's schema declares — JSON Schema's ``pattern`` or
    ``format: uuid``, else its description: "(UUID)" or "N hex chars" (CodeTether's ``task_id`` is "Task id (UUID).",
    ``codebase_id`` "Codebase id (8 hex chars) or global."). An id the schema says nothing about fits any shape.
    One rule for the data checks and grounded decoding: a codebase's 8 hex digits are never a ``task_id``, a task's
    UUID never a ``codebase_id``. ``global`` fits where the description offers it."""
    described = str(schema.get("description", ""))
    if value == "global" and "global" in described.lower():  # grounded decoding offers it by this rule
        return True
    if schema.get("pattern"):
        return re.search(str(schema["pattern"]), value) is not None
    if _is_uuid(schema):
        return _UUID_SHAPE.fullmatch(value) is not None
    hexes = _HEXES.search(described)
    if hexes:
        return re.fullmatch(rf"[0-9a-fA-F]{{{int(hexes.group(1))}}}", value) is not None
    return True


def _declares_shape(schema: Mapping[str, Any]) -> bool:
    """Whether :func:`id_fits` finds a shape in ``schema``: a pattern, ``format: uuid``, or its description's words."""
    described = str(schema.get("description", ""))
    return bool(schema.get("pattern") or _is_uuid(schema) or _HEXES.search(described))


def id_schema(key: str, schema: Mapping[str, Any], tools: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The schema whose shape an id argument takes (:func:`id_fits`): its own, or where it declares none, that of
    the first tool's argument of the same key that does. CodeTether's ``list_tasks`` says only "Only tasks of this
    codebase." of the ``codebase_id`` that ``create_task`` declares "8 hex chars or global": one shape for a
    codebase id in every tool, so a task's UUID is never a codebase to list."""
    if _declares_shape(schema):
        return schema
    for fn in tool_map(tools).values():
        other = ((fn.get("parameters") or {}).get("properties") or {}).get(key)
        if isinstance(other, Mapping) and _declares_shape(other):
            return other
    return schema


def validate_call(call: Call, tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """Everything wrong with ``call`` against the schema; empty when it is a valid call."""
    fns = tool_map(tools)
    fn = fns.get(call.name)
    if fn is None:
        return [f"unknown tool {call.name!r} (known: {', '.join(fns)})"]
    errors: list[str] = []
    props = _properties(fn)
    required = (fn.get("parameters") or {}).get("required") or []
    for r in required:
        if r not in call.arguments:
            errors.append(f"{call.name}: missing required argument {r!r}")
    for key, value in call.arguments.items():
        prop = props.get(key)
        if prop is None:
            errors.append(f"{call.name}: unknown argument {key!r}")
            continue
        ptype = str(prop.get("type", "")).lower()
        err = _type_error(value, ptype)
        if err:
            errors.append(f"{call.name}.{key}: {err}")
            continue
        enum = prop.get("enum")
        if enum is not None and value not in enum:
            errors.append(f"{call.name}.{key}: {value!r} is not one of {enum}")
        if ptype in ("integer", "number"):
            lo, hi = prop.get("minimum"), prop.get("maximum")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                errors.append(f"{call.name}.{key}: {value} is outside {lo}..{hi}")
        if ptype == "string" and key in required and not value.strip():
            errors.append(f"{call.name}.{key}: required text is empty")
    return errors


def _coerce_value(value: Any, ptype: str) -> Any:
    """One value towards its schema type; returns the value unchanged when no safe reading exists."""
    if ptype == "string" and not isinstance(value, str):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            # The parser keeps a bare token as a number only when it reads back as the same text.
            return str(value) if isinstance(value, int) else repr(value)
        return value
    if isinstance(value, str):
        text = value.strip()
        if ptype == "integer" and re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        if ptype == "number":
            try:
                return float(text) if not re.fullmatch(r"[-+]?\d+", text) else int(text)
            except ValueError:
                return value
        if ptype == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    return value


@dataclass
class Coerced:
    call: Call
    coerced: bool  # True when some value was changed to fit its declared type


def coerce_call(call: Call, tools: Sequence[Mapping[str, Any]]) -> Coerced:
    """Read values the schema's way: an integer field that arrived as ``<escape>8<escape>`` becomes 8, a string
    field that arrived bare (``12345``) becomes the text it was. Unknown tools and arguments are left alone
    (``validate_call`` reports them)."""
    fn = tool_map(tools).get(call.name)
    if fn is None:
        return Coerced(call, False)
    props = _properties(fn)
    args: dict[str, Any] = {}
    changed = False
    for key, value in call.arguments.items():
        prop = props.get(key)
        new = _coerce_value(value, str(prop.get("type", "")).lower()) if prop else value
        changed |= new is not value and (type(new) is not type(value) or new != value)
        args[key] = new
    return Coerced(Call(call.name, args), changed)


# --------------------------------------------------------------------------------------------------------------
# Reading a model turn: parse -> coerce -> validate
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ModelTurn:
    """A model turn as every stage reads it (scoring, prediction, serving)."""

    calls: list[Call]  # every well-formed call, coerced to its schema (valid or not)
    text: str  # the words outside calls
    parse_errors: list[str]  # malformed or truncated calls (the lenient parser's report)
    schema_errors: list[list[str]] = field(default_factory=list)  # per call: what its schema rejects
    coerced: bool = False  # some value was changed to fit its declared type

    @property
    def parse_ok(self) -> bool:
        return not self.parse_errors

    @property
    def valid_calls(self) -> list[Call]:
        return [c for c, errs in zip(self.calls, self.schema_errors) if not errs]

    @property
    def errors(self) -> list[str]:
        return [*self.parse_errors, *(e for errs in self.schema_errors for e in errs)]


def read_turn(raw: str, tools: Sequence[Mapping[str, Any]]) -> ModelTurn:
    """Parse a decoded model turn with the one lenient parser (``parse.parse_output``), coerce each call to its
    schema (``coerce_call``), validate each (``validate_call``)."""
    parsed = parse_output(raw)
    coerced = [coerce_call(c, tools) for c in parsed.calls]
    calls = [c.call for c in coerced]
    return ModelTurn(
        calls=calls,
        text=parsed.text,
        parse_errors=list(parsed.errors),
        schema_errors=[validate_call(c, tools) for c in calls],
        coerced=any(c.coerced for c in coerced),
    )

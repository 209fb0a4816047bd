"""FunctionGemma's prompt and call format: the control tokens, the :class:`Call` type, and rendering (byte-exact).

The reference is ``docs/functiongemma-format.md``; the golden renderings in ``tests/fixtures/golden`` are
reproduced byte for byte. The parser of model turns is ``tether_tune.parse``. Rendering is done
as a list of *segments*: plain text (``str``) and control tokens (:class:`Control`, a ``str`` subclass). Joined,
they are the rendered text; kept apart, they let the tokenizer encode a user's literal ``<escape>`` as text while
the template's own ``<escape>`` stays one control token (see ``tether_tune.tokenizer.encode_segments``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .errors import TetherTuneError

TRIGGER = "You are a model that can do function calling with the following functions"
#: The default limit on a model turn's new tokens (evaluate, predict, train's accuracy probe, serve). Three calls
#: with UUIDs run to 159 tokens in the generator's training data (12 of 832 answers of ``make main`` are over
#: 128) and to 150 in the hand-written development set: the old 128 cut right answers.
MAX_NEW_TOKENS = 256

BOS = "<bos>"
EOS = "<eos>"
PAD = "<pad>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
START_DECL = "<start_function_declaration>"
END_DECL = "<end_function_declaration>"
START_CALL = "<start_function_call>"
END_CALL = "<end_function_call>"
START_RESPONSE = "<start_function_response>"
END_RESPONSE = "<end_function_response>"
ESCAPE = "<escape>"

#: Every control token the renderer or the model may emit, with its id in FunctionGemma's tokenizer.
CONTROL_TOKEN_IDS: dict[str, int] = {
    PAD: 0,
    EOS: 1,
    BOS: 2,
    START_DECL: 46,
    END_DECL: 47,
    START_CALL: 48,
    END_CALL: 49,
    START_RESPONSE: 50,
    END_RESPONSE: 51,
    ESCAPE: 52,
    START_OF_TURN: 105,
    END_OF_TURN: 106,
}
#: Generation stops on any of these (spec: "Generation").
STOP_TOKENS = (EOS, END_OF_TURN, START_RESPONSE)
#: FunctionGemma's seven function tokens, in id order: 46..52 (``<unused40>``..``<unused46>`` in plain Gemma 3).
FUNCTION_TOKENS: tuple[str, ...] = (START_DECL, END_DECL, START_CALL, END_CALL, START_RESPONSE, END_RESPONSE, ESCAPE)
#: The function tokens and the turn tokens: the tokens the base Gemma 3 never trained (``--trainable_tokens``).
TOOL_AND_TURN_TOKENS: tuple[str, ...] = (*FUNCTION_TOKENS, START_OF_TURN, END_OF_TURN)


class Control(str):
    """A control token inside a list of rendered segments (plain ``str`` segments are text)."""

    __slots__ = ()


class FormatError(TetherTuneError):
    """Text that is not valid FunctionGemma call syntax (or a value that cannot be rendered).

    ``position`` is the character offset in the parsed text where the problem was found (``None`` for
    rendering errors).
    """

    def __init__(self, message: str, position: int | None = None, text: str | None = None):
        self.message = message
        self.position = position
        where = ""
        if position is not None:
            where = f" at position {position}"
            if text is not None:
                snippet = text[max(0, position - 20) : position + 20]
                where += f" (near {snippet!r})"
        super().__init__(message + where)


@dataclass
class Call:
    """One function call: a tool name and its arguments (plain JSON values)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": dict(self.arguments)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Call":
        return cls(name=d["name"], arguments=dict(d.get("arguments") or {}))


Segments = list[str]  # items that are Control instances are control tokens

# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept ``{"type": "function", "function": {...}}``, ``{"function": {...}}`` or the bare function."""
    return tool["function"] if "function" in tool else tool


def _escaped(text: str) -> Segments:
    return [Control(ESCAPE), text, Control(ESCAPE)]


def _sort_key(name: str) -> tuple[str, str]:
    return (name.lower(), name)


def render_value_segments(value: Any) -> Segments:
    """A call argument value: strings escaped, numbers and booleans bare, lists and objects nested."""
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return ["true" if value else "false"]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FormatError(f"cannot render the number {value!r}: only finite numbers have a rendering")
        return [repr(value)]
    if isinstance(value, (list, tuple)):
        out: Segments = ["["]
        for i, item in enumerate(value):
            if i:
                out.append(",")
            out += render_value_segments(item)
        return out + ["]"]
    if isinstance(value, Mapping):
        return ["{"] + render_arguments_segments(value) + ["}"]
    if value is None:
        raise FormatError("cannot render null/None: leave the argument out instead")
    raise FormatError(f"cannot render a value of type {type(value).__name__}: {value!r}")


def render_arguments_segments(arguments: Mapping[str, Any]) -> Segments:
    """``key:value,key:value`` with keys sorted by name."""
    out: Segments = []
    for i, key in enumerate(sorted(arguments)):
        if i:
            out.append(",")
        out.append(f"{key}:")
        out += render_value_segments(arguments[key])
    return out


def render_call_segments(call: Call | Mapping[str, Any]) -> Segments:
    if not isinstance(call, Call):
        call = Call.from_dict(_function(call))
    return [Control(START_CALL), f"call:{call.name}{{"] + render_arguments_segments(call.arguments) + [
        "}",
        Control(END_CALL),
    ]


def render_call(call: Call | Mapping[str, Any]) -> str:
    """``<start_function_call>call:NAME{k:v,...}<end_function_call>``"""
    return "".join(render_call_segments(call))


def render_calls(calls: Iterable[Call | Mapping[str, Any]]) -> str:
    """The content of a calling model turn: the calls back to back, then ``<start_function_response>``."""
    return "".join("".join(render_call_segments(c)) for c in calls) + START_RESPONSE


def _property_segments(name: str, prop: Mapping[str, Any]) -> Segments:
    out: Segments = [f"{name}:{{"]
    parts: list[Segments] = []
    if "description" in prop:
        parts.append(["description:"] + _escaped(str(prop["description"])))
    if prop.get("enum"):
        enum: Segments = ["enum:["]
        for i, v in enumerate(prop["enum"]):
            if i:
                enum.append(",")
            enum += _escaped(str(v))
        parts.append(enum + ["]"])
    if "type" in prop:
        parts.append(["type:"] + _escaped(str(prop["type"]).upper()))
    for i, p in enumerate(parts):
        if i:
            out.append(",")
        out += p
    return out + ["}"]


def render_declaration_segments(tool: Mapping[str, Any]) -> Segments:
    fn = _function(tool)
    out: Segments = [Control(START_DECL), f"declaration:{fn['name']}{{"]
    if "description" in fn:
        out += ["description:"] + _escaped(str(fn["description"])) + [","]
    params = fn.get("parameters") or {}
    props: Mapping[str, Any] = params.get("properties") or {}
    out.append("parameters:{")
    if props:
        out.append("properties:{")
        for i, name in enumerate(sorted(props, key=_sort_key)):
            if i:
                out.append(",")
            out += _property_segments(name, props[name])
        out.append("},")
        required = list(params.get("required") or [])
        if required:
            out.append("required:[")
            for i, r in enumerate(required):
                if i:
                    out.append(",")
                out += _escaped(r)
            out.append("],")
    out += ["type:"] + _escaped(str(params.get("type", "object")).upper()) + ["}}", Control(END_DECL)]
    return out


def render_declaration(tool: Mapping[str, Any]) -> str:
    return "".join(render_declaration_segments(tool))


def render_declarations(tools: Sequence[Mapping[str, Any]]) -> str:
    return "".join(render_declaration(t) for t in tools)


def _content_text(content: Any) -> str:
    """Message content as text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content)
    raise FormatError(f"message content must be text, got {type(content).__name__}")


def _response_segments(response: Mapping[str, Any]) -> Segments:
    name = response.get("name")
    body = response.get("response", response.get("content"))
    if not name or not isinstance(body, Mapping):
        raise FormatError('a tool message needs {"name": ..., "response": {...}} (the response an object)')
    return [f"response:{name}{{"] + render_arguments_segments(body) + ["}", Control(END_RESPONSE)]


def render_conversation_segments(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
) -> Segments:
    """Segments of :func:`render_conversation` (control tokens as :class:`Control`)."""
    out: Segments = [Control(BOS)]
    declarations: Segments = []
    for tool in tools or ():
        declarations += render_declaration_segments(tool)

    first_role = messages[0].get("role") if messages else None
    if declarations and first_role not in ("developer", "system"):
        # No developer message: the declarations still need a developer turn to live in.
        out += [Control(START_OF_TURN), "developer\n"] + declarations + [Control(END_OF_TURN), "\n"]

    in_model_turn = False  # inside a model turn that called tools and awaits/holds responses
    last_role = None
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("developer", "system"):
            if i != 0:
                raise FormatError(f"message {i}: a {role} message must come first")
            out += [Control(START_OF_TURN), "developer\n", _content_text(msg.get("content")).strip()]
            out += declarations + [Control(END_OF_TURN), "\n"]
        elif role == "user":
            out += [Control(START_OF_TURN), "user\n", _content_text(msg.get("content")).strip()]
            out += [Control(END_OF_TURN), "\n"]
            in_model_turn = False
        elif role == "assistant":
            if not in_model_turn:
                out += [Control(START_OF_TURN), "model\n"]
            text = _content_text(msg.get("content")).strip()
            calls = msg.get("tool_calls") or []
            if text:
                out.append(text)
            if calls:
                for c in calls:
                    out += render_call_segments(c)
                out.append(Control(START_RESPONSE))
                in_model_turn = True
            else:
                out += [Control(END_OF_TURN), "\n"]
                in_model_turn = False
        elif role == "tool":
            content = msg.get("content")
            responses = content if isinstance(content, list) else [content]
            for response in responses:
                if not isinstance(response, Mapping):
                    raise FormatError(f"message {i}: tool content must be an object or a list of objects")
                if not (out and isinstance(out[-1], Control) and out[-1] == START_RESPONSE):
                    out.append(Control(START_RESPONSE))
                out += _response_segments(response)
            in_model_turn = True
        else:
            raise FormatError(f"message {i}: unknown role {role!r} (developer, system, user, assistant, tool)")
        last_role = role
    if add_generation_prompt and last_role != "tool" and not in_model_turn:
        out += [Control(START_OF_TURN), "model\n"]
    return out


def render_conversation(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
) -> str:
    """Render messages the way FunctionGemma's chat template does (same message shapes as
    ``apply_chat_template``). Byte-exact with ``tests/fixtures/golden``."""
    return "".join(render_conversation_segments(messages, tools, add_generation_prompt))


def developer_message(tools_context: str | None = None) -> dict[str, str]:
    """The developer turn: optional context first, then the trigger sentence (the declarations follow it)."""
    text = f"{tools_context.strip()}\n{TRIGGER}" if tools_context else TRIGGER
    return {"role": "developer", "content": text}


def request_messages(request: str, developer: str | None = None) -> list[dict[str, str]]:
    return [developer_message(developer), {"role": "user", "content": request}]


def render_prompt(request: str, tools: Sequence[Mapping[str, Any]], developer: str | None = None) -> str:
    """The prompt for one user request: developer turn with the declarations, the request, ``model\\n``."""
    return render_conversation(request_messages(request, developer), tools, add_generation_prompt=True)


def render_prompt_segments(
    request: str, tools: Sequence[Mapping[str, Any]], developer: str | None = None
) -> Segments:
    return render_conversation_segments(request_messages(request, developer), tools, add_generation_prompt=True)


def developer_turn_end(segments: Segments) -> int:
    """Index just past the developer turn in rendered segments: past its ``<end_of_turn>`` and the ``"\n"``
    after it. Text runs are encoded between control tokens, so the ids of ``segments[:end]`` are exactly a
    prefix of the ids of the whole prompt: this is the prefix every request (and training example) shares."""
    end = next((i for i, s in enumerate(segments) if isinstance(s, Control) and s == END_OF_TURN), None)
    if end is None or end + 1 >= len(segments) or segments[end + 1] != "\n":
        raise FormatError("the rendered conversation has no developer turn ending in <end_of_turn>\\n")
    return end + 2


def prefix_segments(tools: Sequence[Mapping[str, Any]], developer: str | None = None) -> Segments:
    """The prompt's shared prefix: ``<bos>`` and the developer turn (trigger and declarations) through its
    ``<end_of_turn>\\n``."""
    segments = render_prompt_segments("", tools, developer)
    return segments[: developer_turn_end(segments)]

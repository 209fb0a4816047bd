"""Checking examples: schema errors of their calls, and grounding — that the target says only what the request
says (ids verbatim, numbers as digits, enum values by name or synonym, names and free text from the request)."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from .data import Example
from .format import Call
from .text import normalize_text, words as words_of
from .tools import enum_stated, grounding_kind, id_fits, id_schema, tool_map, validate_call


#: Numbers people write as words ("priority seven").
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def number_stated(value: int | float, request: str) -> bool:
    """Whether ``request`` (lower-cased) states ``value``: as digits ("7", "p7", "priority: 7") or, for 0-10, as a
    word ("seven")."""
    if re.search(rf"(?<![0-9.]){re.escape(str(value))}(?![0-9])", request):
        return True
    return isinstance(value, int) and 0 <= value <= 10 and re.search(rf"\b{NUMBER_WORDS[value]}\b", request) is not None


_STOP = {"the", "and", "for", "with", "that", "this", "are", "was", "from", "into", "you", "our", "its", "all"}


def grounding_problems(example: Example, tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """Arguments of the target that the request does not state. Ids and numbers must appear verbatim, enum
    values by name or synonym, agent names modulo spaces/hyphens, free text mostly word for word."""
    problems: list[str] = []
    request = example.request
    low = request.lower()
    request_words = words_of(low)
    words = set(request_words)
    props_of = {name: (fn.get("parameters") or {}).get("properties") or {} for name, fn in tool_map(tools).items()}
    for call in example.calls:
        props = props_of.get(call.name, {})
        for key, value in call.arguments.items():
            prop = props.get(key, {})
            where = f"{call.name}.{key}={value!r}"
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                if not number_stated(value, low):
                    problems.append(f"{where}: the number is not in the request")
            elif isinstance(value, str):
                # A string value is read as a string argument, whatever (or whether) its schema says.
                kind = grounding_kind(key, {**prop, "type": "string"})
                if kind is None:  # an enum: its name or a synonym, as whole words (tools.enum_stated)
                    if not enum_stated(value, request):
                        problems.append(f"{where}: the request names neither the value nor a synonym of it")
                elif kind == "id":
                    if value not in request:
                        problems.append(f"{where}: the id is not copied verbatim from the request")
                    elif not id_fits(value, id_schema(key, prop, tools)):
                        problems.append(f"{where}: not the shape the schema gives ({prop.get('description', '')!r})")
                elif kind == "name":
                    if normalize_text(value) not in normalize_text(request):
                        problems.append(f"{where}: the name is not in the request")
                else:
                    content = [w for w in words_of(value) if len(w) > 2 and w not in _STOP]
                    missing = [w for w in content if w not in words]
                    if content and len(missing) > len(content) / 3:
                        problems.append(f"{where}: most of its words are not in the request ({', '.join(missing[:5])})")
    return problems


def check_example(example: Example, tools: Sequence[Mapping[str, Any]], grounding: bool = True) -> list[str]:
    """Everything wrong with one example: schema errors of its calls, and (with ``grounding``) arguments the
    request never states."""
    tools = example.tools or tools
    problems: list[str] = []
    for call in example.calls:
        problems += validate_call(call, tools)
    if not example.calls and example.text is not None and not example.text.strip():
        problems.append("empty text answer")
    for i, acc in enumerate(example.acceptable_values()):
        for key, values in acc.items():
            for v in values:
                errs = validate_call(Call(example.calls[i].name, {key: v}), tools) if example.calls else []
                problems += [e for e in errs if key in e and "missing required" not in e]
    if grounding and example.calls:
        problems += grounding_problems(example, tools)
    return sorted(set(problems), key=problems.index)


def dedupe_key(example: Example) -> str:
    return " ".join(example.request.lower().split())

"""One example type through the whole pipeline, and the one JSONL reader: reading (three formats) and writing.

Checking an example is ``tether_tune.checks``; encoding it into ``(input_ids, labels)`` with the loss mask is
``tether_tune.encode``; ``tether-tune validate`` is ``tether_tune.validate``.

Accepted formats, one JSON object per line (detected per line):

- original: ``{"input": "<request>", "output": "<start_function_call>call:...<end_function_call>"}``; an output
  that is not a call is a text answer (the model answers in words);
- conversational (Hugging Face): ``{"messages": [...], "tools": [...]}`` whose last message is the assistant's
  (``tool_calls`` with dict ``arguments``, or ``content`` text);
- gold: ``{"id": ..., "query": ..., "calls": [{"name": ..., "arguments": {"arg": [acceptable, ...]}}]}``;
  ``"calls": []`` means no call should be made.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .config import atomic_write_text
from .errors import DataError
from .format import START_CALL, Call, FormatError, developer_message, render_calls
from .parse import parse_calls


@dataclass
class Example:
    """One request and what the model should answer to it."""

    request: str
    calls: list[Call] = field(default_factory=list)  # [] means: answer in words
    text: str | None = None  # the words answer when there are no calls (may be unknown for gold no-call data)
    # Gold data: per call, argument -> acceptable values. None means each argument's value is the only one.
    acceptable: list[dict[str, list[Any]]] | None = None
    id: str | None = None
    developer: str | None = None  # context before the trigger sentence in the developer turn
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier turns between developer and request
    tools: list[dict[str, Any]] | None = None  # the example's own tools (conversational data); None: the run's
    template: str | None = None  # generator template id: splits hold whole templates out
    tags: list[str] = field(default_factory=list)  # gold data: style and kind ("spoken", "multi", ...), for reports
    source: str = ""  # "file:line", for messages

    @property
    def is_call(self) -> bool:
        return bool(self.calls)

    def acceptable_values(self) -> list[dict[str, list[Any]]]:
        if self.acceptable is not None:
            return self.acceptable
        return [{k: [v] for k, v in c.arguments.items()} for c in self.calls]

    def prompt_messages(self) -> list[dict[str, Any]]:
        return [developer_message(self.developer), *self.history, {"role": "user", "content": self.request}]

    def target_message(self) -> dict[str, Any]:
        if self.calls:
            return {"role": "assistant", "tool_calls": [{"type": "function", "function": c.to_dict()} for c in self.calls]}
        if self.text is None:
            raise DataError(self.source, "output", "a no-call example needs a text answer to be trained on")
        return {"role": "assistant", "content": self.text}

    def target_text(self) -> str:
        """The model turn's content as the original format writes it."""
        return render_calls(self.calls)[: -len("<start_function_response>")] if self.calls else (self.text or "")

    def to_original(self) -> dict[str, Any]:
        return {"input": self.request, "output": self.target_text()}

    def to_gold(self) -> dict[str, Any]:
        calls = [{"name": c.name, "arguments": acc} for c, acc in zip(self.calls, self.acceptable_values())]
        rec: dict[str, Any] = {"id": self.id, "query": self.request, "calls": calls}
        if self.template:
            rec["template"] = self.template
        if self.tags:
            rec["tags"] = list(self.tags)
        return rec

    def to_messages(self, tools: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {"messages": [*self.prompt_messages(), self.target_message()]}
        if tools is not None or self.tools is not None:
            rec["tools"] = self.tools if self.tools is not None else list(tools or [])
        return rec


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def _need_str(rec: Mapping[str, Any], key: str, source: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(source, key, "missing or empty text")
    return value


def _from_original(rec: Mapping[str, Any], source: str) -> Example:
    request = _need_str(rec, "input", source)
    output = rec.get("output")
    if not isinstance(output, str):
        raise DataError(source, "output", "missing; expected the model turn as text")
    ex = Example(request=request, id=rec.get("id"), template=rec.get("template"), source=source)
    if output.lstrip().startswith(START_CALL):
        try:
            ex.calls = parse_calls(output)
        except FormatError as err:
            raise DataError(source, "output", f"malformed call: {err}") from None
        canonical = ex.target_text()
        if output != canonical:
            raise DataError(source, "output", f"not in canonical form (keys sorted, numbers bare); expected {canonical!r}")
    else:
        if not output.strip():
            raise DataError(source, "output", "empty output")
        ex.text = output
    return ex


def _from_messages(rec: Mapping[str, Any], source: str) -> Example:
    messages = rec.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(source, "messages", "expected a list of at least a user and an assistant message")
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "assistant":
        raise DataError(source, "messages[-1]", "the last message must be the assistant's answer")
    body = list(messages[:-1])
    developer = None
    if body and isinstance(body[0], Mapping) and body[0].get("role") in ("developer", "system"):
        dev = str(body.pop(0).get("content") or "").strip()
        developer = dev.replace("You are a model that can do function calling with the following functions", "").strip() or None
    if not body or not isinstance(body[-1], Mapping) or body[-1].get("role") != "user":
        raise DataError(source, "messages", "the assistant's answer must follow a user message")
    request = body[-1].get("content")
    if not isinstance(request, str) or not request.strip():
        raise DataError(source, f"messages[{len(messages) - 2}].content", "missing or empty user text")
    calls = []
    for i, tc in enumerate(last.get("tool_calls") or []):
        fn = tc.get("function", tc) if isinstance(tc, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise DataError(source, f"messages[-1].tool_calls[{i}]", "expected {\"function\": {\"name\", \"arguments\"}}")
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                raise DataError(source, f"messages[-1].tool_calls[{i}].arguments", "not a JSON object") from None
        if not isinstance(args, Mapping):
            raise DataError(source, f"messages[-1].tool_calls[{i}].arguments", "expected an object")
        calls.append(Call(fn["name"], dict(args)))
    text = last.get("content")
    if not calls and not (isinstance(text, str) and text.strip()):
        raise DataError(source, "messages[-1]", "the assistant message has neither tool_calls nor content")
    tools = rec.get("tools")
    return Example(
        request=request,
        calls=calls,
        text=None if calls else text,
        id=rec.get("id"),
        developer=developer,
        history=[dict(m) for m in body[:-1]],
        tools=list(tools) if tools else None,
        template=rec.get("template"),
        source=source,
    )


def _from_gold(rec: Mapping[str, Any], source: str) -> Example:
    request = _need_str(rec, "query", source)
    calls_in = rec.get("calls")
    if not isinstance(calls_in, list):
        raise DataError(source, "calls", "expected a list of calls ([] for no call)")
    calls, acceptable = [], []
    for i, c in enumerate(calls_in):
        if not isinstance(c, Mapping) or not isinstance(c.get("name"), str):
            raise DataError(source, f"calls[{i}].name", "missing tool name")
        args = c.get("arguments") or {}
        if not isinstance(args, Mapping):
            raise DataError(source, f"calls[{i}].arguments", "expected an object of argument -> [acceptable values]")
        acc: dict[str, list[Any]] = {}
        for k, values in args.items():
            if not isinstance(values, list) or not values:
                raise DataError(source, f"calls[{i}].arguments.{k}", "expected a non-empty list of acceptable values")
            acc[k] = list(values)
        calls.append(Call(c["name"], {k: v[0] for k, v in acc.items()}))
        acceptable.append(acc)
    return Example(
        request=request,
        calls=calls,
        text=rec.get("answer"),
        acceptable=acceptable,
        id=None if rec.get("id") is None else str(rec.get("id")),
        template=rec.get("template"),
        tags=_tags(rec, source),
        source=source,
    )


def _tags(rec: Mapping[str, Any], source: str) -> list[str]:
    tags = rec.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise DataError(source, "tags", "expected a list of non-empty strings")
    return list(tags)


def parse_record(rec: Any, source: str) -> Example:
    """One JSON object in any accepted format -> :class:`Example`."""
    if not isinstance(rec, Mapping):
        raise DataError(source, None, f"expected a JSON object, got {type(rec).__name__}")
    if "messages" in rec:
        return _from_messages(rec, source)
    if "query" in rec and "calls" in rec:
        return _from_gold(rec, source)
    if "input" in rec or "output" in rec:
        return _from_original(rec, source)
    raise DataError(source, None, 'unknown format: expected "input"/"output", "messages", or "query"/"calls"')


def jsonl_lines(path: str | Path, what: str = "file") -> Iterator[tuple[str, str]]:
    """``("file:line", text)`` for each non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, f"no such {what}")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield f"{path}:{lineno}", line


def json_record(line: str, source: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(source, None, f"not valid JSON (column {err.colno}: {err.msg})") from None


def read_examples(path: str | Path, strict: bool = True) -> tuple[list[Example], list[DataError]]:
    """Read a JSONL file. With ``strict``, the first bad line raises; otherwise bad lines are returned as errors
    and the good ones kept (nothing is dropped silently: the caller decides what to do with the errors)."""
    examples: list[Example] = []
    errors: list[DataError] = []
    for source, line in jsonl_lines(path):
        try:
            examples.append(parse_record(json_record(line, source), source))
        except DataError as err:
            if strict:
                raise
            errors.append(err)
    return examples, errors


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write records atomically (the old file stays whole until the new one is complete). Returns the count."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)

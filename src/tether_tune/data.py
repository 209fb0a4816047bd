"""One example type through the whole pipeline: reading (three formats), checking, writing, and encoding into
``(input_ids, labels)`` with the loss mask on the model turn alone.

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

from .config import ConfigError, atomic_write_text
from .format import (
    END_OF_TURN,
    START_CALL,
    Call,
    Control,
    FormatError,
    developer_message,
    parse_calls,
    render_calls,
    render_conversation_segments,
)
from .tools import tool_map, validate_call

IGNORE_INDEX = -100  # labels of tokens that carry no loss (prompt, padding)


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
        return rec

    def to_messages(self, tools: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {"messages": [*self.prompt_messages(), self.target_message()]}
        if tools is not None or self.tools is not None:
            rec["tools"] = self.tools if self.tools is not None else list(tools or [])
        return rec


class DataError(ValueError):
    """A problem in a data file, located by file:line and field."""

    def __init__(self, source: str, field_name: str | None, message: str):
        self.source, self.field, self.message = source, field_name, message
        where = f"{source}: field {field_name!r}: " if field_name else f"{source}: "
        super().__init__(where + message)


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
        source=source,
    )


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


# --------------------------------------------------------------------------------------------------------------
# Checking: schema, and that the target says only what the request says
# --------------------------------------------------------------------------------------------------------------

#: Words people use for enum values; a value in the target must be named (or a synonym said) in the request.
ENUM_SYNONYMS: dict[str, tuple[str, ...]] = {
    "pending": ("pending", "queued", "waiting", "not started"),
    "working": ("working", "running", "in progress", "in-progress", "active", "ongoing", "being worked on"),
    "completed": ("completed", "complete", "done", "finished", "succeeded", "successful"),
    "failed": ("failed", "failing", "errored", "broken", "crashed", "failures"),
    "cancelled": ("cancelled", "canceled", "aborted", "called off"),
    "verbatim": ("verbatim", "word for word", "word-for-word", "exact", "exactly", "full transcript", "in full", "everything"),
    "summary": ("summary", "summarize", "summarise", "recap", "overview", "gist", "short version", "tl;dr", "tldr", "brief"),
    "build": ("build", "builder", "building"),
    "plan": ("plan", "planner", "planning"),
    "general": ("general", "general-purpose", "generic"),
    "explore": ("explore", "explorer", "exploration", "exploring"),
    "forage": ("forage", "forager", "foraging"),
}

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "and", "for", "with", "that", "this", "are", "was", "from", "into", "you", "our", "its", "all"}


def _norm(text: str) -> str:
    return re.sub(r"[\s\-_.,/*^]+", "", text.lower())


def grounding_problems(example: Example, tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """Arguments of the target that the request does not state. Ids and numbers must appear verbatim, enum
    values by name or synonym, agent names modulo spaces/hyphens, free text mostly word for word."""
    problems: list[str] = []
    request = example.request
    low = request.lower()
    words = set(_WORD.findall(low))
    props_of = {name: (fn.get("parameters") or {}).get("properties") or {} for name, fn in tool_map(tools).items()}
    for call in example.calls:
        props = props_of.get(call.name, {})
        for key, value in call.arguments.items():
            prop = props.get(key, {})
            where = f"{call.name}.{key}={value!r}"
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                if str(value) not in _WORD.findall(low) and str(value) not in low:
                    problems.append(f"{where}: the number is not in the request")
            elif isinstance(value, str):
                if prop.get("enum"):
                    names = ENUM_SYNONYMS.get(value, (value,))
                    # Whole words (and their inflections) only: "summarized" states `summary`, but "rebuild" does
                    # not state `build`, nor does "abandoned" say "done".
                    if not any(re.search(rf"(?<![a-z0-9]){re.escape(n)}(?:s|d|ed|ing)?(?![a-z0-9])", low) for n in names):
                        problems.append(f"{where}: the request names neither the value nor a synonym of it")
                elif key.endswith("_id"):
                    if value not in request:
                        problems.append(f"{where}: the id is not copied verbatim from the request")
                elif key.endswith("_name"):
                    if _norm(value) not in _norm(request):
                        problems.append(f"{where}: the name is not in the request")
                else:
                    content = [w for w in _WORD.findall(value.lower()) if len(w) > 2 and w not in _STOP]
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


# --------------------------------------------------------------------------------------------------------------
# Encoding: the loss mask
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on the prompt; the token id itself on the supervised model turn
    prefix_len: int = 0  # tokens of the developer turn (with the declarations), shared by every example

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def encode_example(tokenizer: Any, example: Example, tools: Sequence[Mapping[str, Any]]) -> Encoded:
    """``(input_ids, labels)`` for one example. The prompt (developer turn with every declaration, earlier turns,
    the request, ``<start_of_turn>model\\n``) is encoded exactly as at inference and carries no loss; the model
    turn's content — the calls and ``<start_function_response>``, or the text and ``<end_of_turn>`` — is
    supervised. The newline after ``<end_of_turn>`` is not part of the turn the model produces, so it is left out.
    """
    from .tokenizer import encode_segments  # deferred: keeps `tether-tune validate` free of transformers

    tools = example.tools or tools
    prompt = render_conversation_segments(example.prompt_messages(), tools, add_generation_prompt=True)
    full = render_conversation_segments([*example.prompt_messages(), example.target_message()], tools)
    if full[: len(prompt)] != prompt:  # the model turn must extend the prompt, segment for segment
        raise DataError(example.source, None, "the rendered prompt is not a prefix of the rendered conversation")
    completion = full[len(prompt) :]
    if completion[-2:] == [Control(END_OF_TURN), "\n"]:
        completion = completion[:-1]
    prompt_ids = encode_segments(tokenizer, prompt)
    completion_ids = encode_segments(tokenizer, completion)
    # The developer turn ends at its <end_of_turn> and the "\n" after it; text runs are encoded between control
    # tokens, so its ids are exactly a prefix of the prompt's.
    dev_end = prompt.index(Control(END_OF_TURN)) + 2
    prefix_len = len(encode_segments(tokenizer, prompt[:dev_end]))
    return Encoded(prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids, prefix_len)


def show_supervision(tokenizer: Any, encoded: Encoded, open_mark: str = "⟦", close_mark: str = "⟧") -> str:
    """The encoded example as text with each supervised span wrapped in ⟦ ⟧ (for ``--show_example``)."""
    out: list[str] = []
    inside = False
    for tok, label in zip(encoded.input_ids, encoded.labels):
        sup = label != IGNORE_INDEX
        if sup != inside:
            out.append(open_mark if sup else close_mark)
            inside = sup
        out.append(tokenizer.decode([tok], skip_special_tokens=False, clean_up_tokenization_spaces=False))
    if inside:
        out.append(close_mark)
    return "".join(out)


# --------------------------------------------------------------------------------------------------------------
# `tether-tune validate`
# --------------------------------------------------------------------------------------------------------------

@dataclass
class ValidateConfig:
    """Check data files (any accepted format) against the tools and print statistics."""

    files: list[str] = field(default_factory=list, metadata={"help": "JSONL files to check", "positional": True})
    tools: str = field(default="codetether_tools.json", metadata={"help": "tools file the calls must fit"})
    strict: bool = field(default=False, metadata={"help": "stop at the first problem"})
    grounding: bool = field(default=True, metadata={"help": "also check every argument is stated in the request"})
    tokenizer: str | None = field(default=None, metadata={"help": "model dir/name whose tokenizer measures token lengths"})
    max_errors: int = field(default=50, metadata={"help": "print at most this many problems per file (all are counted)"})

    def validate(self) -> None:
        if not self.files:
            raise ConfigError("give at least one FILE to validate")


def dataset_stats(examples: Sequence[Example], tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-tool counts, per-argument coverage (how often each optional argument is present), no-call share."""
    per_tool: dict[str, int] = {}
    arg_counts: dict[str, dict[str, int]] = {}
    n_calls = 0
    for ex in examples:
        if not ex.calls:
            per_tool["(no call)"] = per_tool.get("(no call)", 0) + 1
        if len(ex.calls) > 1:
            per_tool["(several calls)"] = per_tool.get("(several calls)", 0) + 1
        for c in ex.calls:
            n_calls += 1
            per_tool[c.name] = per_tool.get(c.name, 0) + 1
            counts = arg_counts.setdefault(c.name, {})
            for k in c.arguments:
                counts[k] = counts.get(k, 0) + 1
    coverage = {}
    for name, fn in tool_map(tools).items():
        props = (fn.get("parameters") or {}).get("properties") or {}
        n = per_tool.get(name, 0)
        coverage[name] = {k: (arg_counts.get(name, {}).get(k, 0), n) for k in props}
    return {
        "n": len(examples),
        "per_tool": per_tool,
        "coverage": coverage,
        "no_call_share": per_tool.get("(no call)", 0) / max(1, len(examples)),
    }


def run_validate(cfg: ValidateConfig) -> int:
    from .tools import load_tools

    tools = load_tools(cfg.tools)
    tokenizer = None
    if cfg.tokenizer:
        from transformers import AutoTokenizer

        from .modeling import resolve_model
        from .tokenizer import check_control_tokens

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer))
        check_control_tokens(tokenizer)
    bad_total = 0
    for path in cfg.files:
        examples, errors = read_examples(path, strict=cfg.strict)
        problems: list[str] = [str(e) for e in errors]
        seen: dict[str, str] = {}
        for ex in examples:
            for p in check_example(ex, tools, cfg.grounding):
                problems.append(f"{ex.source}: {p}")
                if cfg.strict:
                    print(problems[-1], file=sys.stderr)
                    return 1
            key = dedupe_key(ex)
            if key in seen:
                problems.append(f"{ex.source}: duplicate of {seen[key]}")
            seen.setdefault(key, ex.source)
        stats = dataset_stats(examples, tools)
        print(f"{path}: {stats['n']} examples, {len(problems)} problems")
        for name, n in sorted(stats["per_tool"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<22} {n:>6}")
        print(f"  no-call share: {stats['no_call_share']:.1%}")
        print("  argument coverage (present / calls of the tool):")
        for name, cov in stats["coverage"].items():
            if cov:
                print(f"    {name}: " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in cov.items()))
        if tokenizer is not None and examples:
            lengths = sorted(len(encode_example(tokenizer, ex, tools).input_ids) for ex in examples if ex.calls or ex.text)
            if lengths:
                print(f"  tokens per example: min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
        for p in problems[: cfg.max_errors]:
            print(f"  ✗ {p}")
        if len(problems) > cfg.max_errors:
            print(f"  … and {len(problems) - cfg.max_errors} more")
        bad_total += len(problems)
    return 1 if bad_total else 0

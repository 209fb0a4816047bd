"""The one parser of FunctionGemma model turns, shared by training checks, scoring, prediction and serving.

``parse_calls`` is strict: a turn made only of calls, or :class:`~tether_tune.format.FormatError` with the
position. ``parse_output`` is lenient: every well-formed call, the words outside calls, and each malformed call
reported (never raised). Both read ``<escape>``-delimited strings atomically, nest objects and lists to a
depth limit, and keep a bare token as a number only when it reads back as the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .format import END_OF_TURN, EOS, ESCAPE, START_CALL, END_CALL, START_RESPONSE, Call, FormatError


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")
_MAX_DEPTH = 32
_END_MARKERS = (START_RESPONSE, END_OF_TURN, EOS)


class _Reader:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> FormatError:
        return FormatError(message, self.pos if pos is None else pos, self.text)

    def startswith(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def expect(self, s: str, what: str | None = None) -> None:
        if not self.startswith(s):
            rest = self.text[self.pos :]
            if s.startswith(rest):  # the text ended inside the literal (or right before it)
                raise self.error(f"truncated: expected {what or repr(s)} but the text ended")
            raise self.error(f"expected {what or repr(s)}")
        self.pos += len(s)

    def name(self, what: str) -> str:
        m = _NAME.match(self.text, self.pos)
        if not m:
            if self.pos >= len(self.text):
                raise self.error(f"truncated: expected {what} but the text ended")
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group()

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.error(f"values nested deeper than {_MAX_DEPTH} levels")
        if self.startswith(ESCAPE):
            start = self.pos + len(ESCAPE)
            end = self.text.find(ESCAPE, start)
            if end < 0:
                raise self.error("truncated: a string was opened with <escape> and never closed")
            self.pos = end + len(ESCAPE)
            return self.text[start:end]
        if self.startswith("{"):
            self.pos += 1
            return self.arguments("}", depth + 1)
        if self.startswith("["):
            self.pos += 1
            items: list[Any] = []
            if self.startswith("]"):
                self.pos += 1
                return items
            while True:
                items.append(self.value(depth + 1))
                if self.startswith(","):
                    self.pos += 1
                elif self.startswith("]"):
                    self.pos += 1
                    return items
                elif self.pos >= len(self.text):
                    raise self.error("truncated: a list was never closed with ']'")
                else:
                    raise self.error("expected ',' or ']' in a list")
        return self.bare()

    def bare(self) -> Any:
        """An unquoted value: up to the next top-level ``,`` ``}`` ``]`` or control token."""
        start = self.pos
        n = len(self.text)
        while self.pos < n and self.text[self.pos] not in ",}]" and not self.startswith("<"):
            self.pos += 1
        raw = self.text[start : self.pos]
        if raw == "":
            if self.pos >= n:
                raise self.error("truncated: expected a value but the text ended")
            raise self.error("expected a value")
        if raw == "true":
            return True
        if raw == "false":
            return False
        if raw == "null":
            return None
        # A number only when it reads back as the same text: `00123456` (an all-digit hex id) or `1.50` stay
        # text, so that coercing them to a string field gives exactly what the model wrote.
        if _INT.fullmatch(raw) and str(int(raw)) == raw:
            return int(raw)
        if _FLOAT.fullmatch(raw) and repr(float(raw)) == raw:
            return float(raw)
        return raw  # a bare word: kept as the text it was; schema coercion decides what it means

    def arguments(self, close: str, depth: int) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.startswith(close):
            self.pos += 1
            return args
        while True:
            key_pos = self.pos
            key = self.name("an argument name")
            self.expect(":", "':' after the argument name")
            if key in args:
                raise self.error(f"argument {key!r} given twice", key_pos)
            args[key] = self.value(depth)
            if self.startswith(","):
                self.pos += 1
            elif self.startswith(close):
                self.pos += 1
                return args
            elif self.pos >= len(self.text):
                raise self.error(f"truncated: arguments were never closed with {close!r}")
            else:
                raise self.error(f"expected ',' or {close!r} after an argument")

    def call(self) -> Call:
        self.expect(START_CALL)
        self.expect("call:")
        name = self.name("a function name")
        self.expect("{", "'{' after the function name")
        args = self.arguments("}", 1)
        self.expect(END_CALL, "<end_function_call>")
        return Call(name, args)


def parse_calls(text: str) -> list[Call]:
    """Parse a model turn made of calls: ``<start_function_call>...<end_function_call>`` back to back,
    optionally followed by ``<start_function_response>`` (or ``<end_of_turn>`` / ``<eos>``).

    Raises :class:`FormatError` (with the position) for anything else: text outside calls, broken syntax,
    truncated output. Never raises anything else.
    """
    if not isinstance(text, str):
        raise FormatError(f"expected text, got {type(text).__name__}")
    r = _Reader(text)
    calls: list[Call] = []
    while r.pos < len(text):
        if r.startswith(START_CALL):
            calls.append(r.call())
            continue
        for marker in _END_MARKERS:
            if r.startswith(marker):
                r.pos += len(marker)
                if not _only_end_markers(text[r.pos :]):
                    raise r.error("text after the end of the turn")
                return calls
        raise r.error("expected <start_function_call>")
    return calls


def _only_end_markers(rest: str) -> bool:
    rest = rest.strip()
    while rest:
        for marker in _END_MARKERS:
            if rest.startswith(marker):
                rest = rest[len(marker) :].strip()
                break
        else:
            return False
    return True


@dataclass
class ParsedOutput:
    """What a model turn said: its calls, its plain text (outside calls), and what could not be parsed."""

    calls: list[Call]
    text: str
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_output(text: str) -> ParsedOutput:
    """Lenient parse for scoring and serving: every well-formed call is kept, the words outside calls are
    returned as text, and each malformed or truncated call is reported in ``errors`` (never raised)."""
    calls: list[Call] = []
    errors: list[str] = []
    words: list[str] = []
    pos = 0
    while True:
        start = text.find(START_CALL, pos)
        words.append(text[pos : start if start >= 0 else len(text)])
        if start < 0:
            break
        r = _Reader(text)
        r.pos = start
        try:
            calls.append(r.call())
            pos = r.pos
        except FormatError as err:
            errors.append(str(err))
            nxt = text.find(START_CALL, start + len(START_CALL))
            pos = nxt if nxt >= 0 else len(text)
            if nxt < 0:
                break
    plain = "".join(words)
    for marker in _END_MARKERS:
        plain = plain.replace(marker, "")
    return ParsedOutput(calls=calls, text=plain.strip(), errors=errors)

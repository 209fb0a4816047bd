"""Decoding under the tool schema: whatever the model prefers, what comes out parses and validates.

The tools become a grammar over FunctionGemma's model turn (``docs/functiongemma-format.md``)::

    turn   := call+ <start_function_response>  |  [TEXT] (<end_of_turn> | <eos>)
    call   := <start_function_call> "call:" NAME "{" ARGS "}" <end_function_call>
    ARGS   := the tool's arguments in sorted key order, required ones present, each value of its declared type:
              <escape>text<escape> (no "<escape>" inside; not blank when required), an enum member, digits for
              integers (every value of a small minimum..maximum range), true/false, nested lists and objects

The model still chooses between calling and answering in words (its first token), which tool, which optional
arguments, the values, and how many calls; everything else is forced.

**Grounded** (``grounded=True``, the default for prediction): the grammar is built per request, and a value can
only be what the request says —

- an id argument (a key ending in ``_id``: ``task_id``, ``session_id``, ``codebase_id``) only one of the request's
  id-like spans (a UUID, or a run of letters, digits, ``-`` and ``_`` of 6+ characters with a digit in it), or
  ``global`` where the schema's description offers it and the request says it;
- a name (a key ending in ``_name``: ``agent_name``) only a span of 1-3 of the request's words, lower-cased and
  joined by ``-`` (spoken "the Code Reviewer" may become ``code-reviewer``), never holding an id;
- any other text (``title``, ``description``, ``message``) only a span of the request's words, as written
  (llguidance's ``substring_words`` terminal), not starting or ending in white space;
- an enum value of a string argument (``status``, ``style``, ``agent_type``) only one the request states, by name
  or synonym (``tools.enum_stated``: "broke" states ``failed``, "tl;dr" ``summary``); an optional one the request
  does not state is left out ("list all the tasks" cannot become ``status: pending``).

An optional enum argument the request states is easy for a small model to leave out ("show me the failed tasks"
as ``list_tasks{}``). :func:`unsaid_enum` finds such an argument at each point between two arguments of the call
in progress, and :func:`skips_enum` the tokens that would pass it by (closing the call, or a later key); decoding
weighs them down by a calibrated bias (``decoding``'s ``enum_bias``, chosen by ``calibrate.py``). In the same way,
:func:`asked_tools` finds, at a call's tool name, the tools the request asks for by its words (``tools.TOOL_CUES``)
that no call has answered, and :func:`skips_tools` the tokens that lead away from them ("give me the gist of session
…" named as ``get_session_history``); ``tool_bias`` weighs those down.

A call whose required argument has no candidate in the request (``cancel the task`` without an id) is left out of
the grammar, so the model has to answer in words. Where one candidate remains (one UUID in the request), the
grammar forces it and it costs no forward.

Engine: llguidance (Microsoft's grammar engine, the one behind guidance and vLLM/SGLang's ``guidance`` backend).
We chose it over a hand-written state machine because its Lark grammars name tokens by id (``<[52]>``), so
FunctionGemma's control tokens are matched as the single tokens they are, never as the characters of their
names; its regexes take intersection and negation (``& ~/.*<escape>.*/``), which is exactly "any text without
the delimiter"; it computes the 262k-token mask in Rust in well under a millisecond; and it reports the tokens a
grammar forces (``compute_ff_tokens``), which we append without asking the model. It is a 3 MB wheel with no
dependencies (it does not touch torch). xgrammar would pull in triton; outlines-core compiles regexes over
token *strings*, where a control token cannot be told from its spelling.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any, Mapping, Sequence

from .format import (
    CONTROL_TOKEN_IDS,
    END_CALL,
    END_OF_TURN,
    EOS,
    ESCAPE,
    START_CALL,
    START_RESPONSE,
)
from .tools import TOOL_CUES, UUID_PATTERN, enum_stated, grounding_kind, id_fits, id_schema, tool_map

#: An integer range with at most this many values is written out value by value (exact bounds);
#: a larger one is "digits" with the sign the minimum allows.
MAX_LISTED_INTEGERS = 256

# Python's str.strip() also strips \x1c-\x1f, which Unicode (and so the regex \s) does not call white space.
_NOT_BLANK = r"[^\s\x1c-\x1f]"


#: A text that starts or ends in a spoken filler word (the generator's fillers, ``synth.values.FILLERS_MID``).
_FILLER_EDGE = r"(?s:(?:[Uu]hm?|[Uu]mm?|[Ee]rm?|[Hh]mm)(?:[\s,].*)?|.*[\s,](?:uhm?|umm?|erm?|hmm))"


def _lit(text: str) -> str:
    """A Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


def _seq(*parts: str | None) -> str:
    return " ".join(p for p in parts if p)


_UUID = re.compile(rf"(?<![0-9A-Za-z]){UUID_PATTERN}(?![0-9A-Za-z])")
_ID_LIKE = re.compile(r"(?<![\w-])[A-Za-z0-9][\w-]{4,}[A-Za-z0-9](?![\w-])")
_NAME_WORD = re.compile(r"[A-Za-z0-9][\w-]*")
#: Longest agent name, in words, taken from a request ("security audit agent").
MAX_NAME_WORDS = 3


def id_spans(request: str) -> list[str]:
    """The request's id-like spans, in order: UUIDs, and runs of letters, digits, ``-``, ``_`` of 6+ characters
    that contain a digit (``3734715f``, ``task-42a``) — never a plain word."""
    out = [m.group() for m in _UUID.finditer(request)]
    out += [m.group() for m in _ID_LIKE.finditer(request) if any(c.isdigit() for c in m.group())]
    return list(dict.fromkeys(out))


def open_ids(request: str, said: str) -> list[str]:
    """The request's id-like spans (:func:`id_spans`) that ``said`` (the model turn so far, as text) does not
    contain: ids the user gave that no call has used yet. After a call, one left open usually means another call
    is due ("cancel A and B", "get A and the history of B"); ``decoding`` weighs that decision with its own
    calibrated bias (``open_bias``)."""
    return [i for i in id_spans(request) if i not in said]


#: A string value in a model turn (as decoded): the text between an ``<escape>`` and the next.
_ESCAPED = re.compile(f"{re.escape(ESCAPE)}(.*?){re.escape(ESCAPE)}", re.S)

#: Where one clause of a request ends and the next begins: punctuation, "and", "then", "also".
_CLAUSE = re.compile(r"[.;,!?+&]\s|\band\b|\bthen\b|\balso\b|\n")


def unspent_cues(request: str, said: str) -> list[str]:
    """The tools the request asks for in more clauses than ``said`` (the model turn so far, as text) has calls to
    them (``tools.TOOL_CUES``), with the values said so far taken out of the request first (a message that says
    "cancel" asks for nothing). "Cancel A and tell the build-bot it is off" after ``cancel_task{task_id:A}`` gives
    ``["send_message"]``; "tell X …, and tell Y the same" after one message, too."""
    low = request.lower()
    for value in _ESCAPED.findall(said):
        if len(value.strip()) > 2:
            low = low.replace(value.lower(), " ")
    clauses = _CLAUSE.split(low)
    called = re.findall(r"call:([^{]+)\{", said)
    return [name for name, cue in TOOL_CUES.items()
            if sum(bool(re.search(cue, c)) for c in clauses) > called.count(name)]


def left_open(request: str, said: str) -> bool:
    """Whether the request still asks for something no call in ``said`` has answered: an id no call has used
    (:func:`open_ids`), or a tool asked for in more clauses than it has calls (:func:`unspent_cues`). Decoding
    weighs the decision after a call with its own calibrated bias there (``open_bias``)."""
    return bool(open_ids(request, said) or unspent_cues(request, said))


#: The text that opens a call in a model turn (as decoded, control tokens spelled out).
_CALL_OPEN = START_CALL + "call:"


def unsaid_enum(tools: Sequence[Mapping[str, Any]], request: str, said: str) -> tuple[str, tuple[str, ...]] | None:
    """Where ``said`` (the model turn so far, as text) stands between two arguments of a call in progress — right
    after the tool's name, after ``{`` or ``,``, or after a value's closing ``<escape>`` — the first optional string
    enum argument of that tool that is not set yet, can still come (arguments go in sorted key order: it sorts after
    every key given) and has a value the request states (``tools.enum_stated``). Returns ``(key, later)``: that key
    and the keys sorted after it (choosing one of those, or closing the call, passes the argument by); ``None``
    elsewhere. "show me the failed tasks" after ``call:list_tasks`` gives ``("status", ())``."""
    start = said.rfind(_CALL_OPEN)
    if start < 0:
        return None
    call = said[start + len(_CALL_OPEN):]
    if END_CALL in call:
        return None
    name, brace, args = call.partition("{")
    fn = tool_map(tools).get(name)
    if fn is None:
        return None
    if brace:
        bare = _ESCAPED.sub("", args)  # values left out
        if ESCAPE in bare or not (args == "" or args.endswith((",", ESCAPE))):
            return None  # inside a value, a key or a number
        given = re.findall(r"(?:^|,)([^,:]+):", bare)
    else:
        given = []
    params = fn.get("parameters") or {}
    props: Mapping[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])
    keys = sorted(props)
    last = max(given, default="")
    for j, key in enumerate(keys):
        prop = props[key]
        if key in given or key in required or key < last or not prop.get("enum"):
            continue
        if any(enum_stated(v, request) for v in prop["enum"]):
            return key, tuple(keys[j + 1:])
    return None


def skips_enum(token_text: str, key: str, later: Sequence[str]) -> bool:
    """Whether a token, as text, passes by the enum argument ``key`` where :func:`unsaid_enum` found it: it closes
    the call's arguments (``}``, ``{}``), or it begins one of the ``later`` keys and not ``key``."""
    if "}" in token_text:
        return True
    text = token_text.strip()
    return bool(text) and any(k.startswith(text) for k in later) and not key.startswith(text)


def asked_tools(tools: Sequence[Mapping[str, Any]], request: str, said: str) -> tuple[str, tuple[str, ...]] | None:
    """Where ``said`` (the model turn so far, as text) stands in the tool name of a call in progress (right after
    ``call:`` or within the name): ``(name, asked)``, the part of the name said so far and the offered tools the
    request asks for that no call has answered yet (:func:`unspent_cues`); ``None`` elsewhere, or where it asks for
    none. "How far along is task A? And pull up the chat log of session B" after the ``get_task`` call gives
    ``("", ("get_session_history",))``."""
    start = said.rfind(_CALL_OPEN)
    if start < 0:
        return None
    name = said[start + len(_CALL_OPEN):]
    if "{" in name or END_CALL in name:
        return None
    offered = tool_map(tools)
    asked = tuple(t for t in unspent_cues(request, said) if t in offered)
    return (name, asked) if asked else None


def skips_tools(token_text: str, name: str, asked: Sequence[str]) -> bool:
    """Whether a token, as text, leads the tool name said so far (``name``, where :func:`asked_tools` found it) away
    from every tool in ``asked``: after it, the name is no longer the start of one of them (or, with the ``{`` that
    ends a name, not one of them)."""
    head, brace, _ = (name + token_text).partition("{")
    return not any(t == head if brace else t.startswith(head) for t in asked)


#: A word that is an id, never part of a name: a UUID, or 8+ hex digits with a digit among them (a codebase id).
_ID_WORD = re.compile(r"(?=.*[0-9])[0-9a-f]{8,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def name_spans(request: str, max_words: int = MAX_NAME_WORDS) -> list[str]:
    """Every run of 1..``max_words`` of the request's words, lower-cased and joined with ``-``; a run never holds
    an id (``_ID_WORD``): "send 6a127c6c to the reviewer" offers ``reviewer``, not ``6a127c6c`` (a fine-tuned model
    once sent a message to a UUID)."""
    words = [w.lower().strip("-_") for w in _NAME_WORD.findall(request)]
    words = [w for w in words if w]
    runs = (words[i : i + n] for n in range(1, max_words + 1) for i in range(len(words) - n + 1))
    return list(dict.fromkeys("-".join(r) for r in runs if not any(_ID_WORD.fullmatch(w) for w in r)))


class _Unreachable(Exception):
    """A required argument has no candidate in the request: the call cannot be made."""


def _without(names: Sequence[str]) -> str:
    """A regex matching any text that contains one of ``names`` (to be negated with ``~``)."""
    inner = "|".join(n[1:-1] for n in names)  # "<escape>" -> "escape"; the brackets are matched around them
    return rf"/(?s:.*<({inner})>.*)/"


class _Grammar:
    """Builds the Lark text: one rule per tool, per argument chain and per value type."""

    def __init__(self, tokens: Mapping[str, int], request: str | None = None):
        self.tok = {name: f"<[{i}]>" for name, i in tokens.items()}
        self.rules: list[str] = []
        self.names: set[str] = set()
        self.request = request  # None: not grounded
        self.ids = id_spans(request) if request is not None else []  # the request's id-like spans, found once
        self.span_used = False
        self.tools: Sequence[Mapping[str, Any]] = []  # the tools being built (an id's shape: tools.id_schema)

    def rule(self, name: str, body: str) -> str:
        if name not in self.names:
            self.names.add(name)
            self.rules.append(f"{name}: {body}")
        return name

    def string(self, required: bool) -> str:
        esc = self.tok[ESCAPE]
        return f"{esc} STR_NONBLANK {esc}" if required else f"{esc} STR? {esc}"

    def grounded(self, kind: str, schema: Mapping[str, Any], name: str) -> str | None:
        """A string value that only the request can supply (see the module docstring); None: no candidate."""
        esc = self.tok[ESCAPE]
        if kind == "text":
            self.span_used = True
            return f"{esc} SPAN {esc}"
        request = self.request or ""
        if kind == "id":
            values = [v for v in self.ids if id_fits(v, schema)]
            if id_fits("global", schema) and re.search(r"\bglobal\b", request, re.I):
                values.append("global")
        else:
            values = name_spans(request)
        values = [v for v in values if ESCAPE not in v]
        if not values:
            return None
        return self.rule(f"{name}_grounded", f"{esc} ({' | '.join(_lit(v) for v in values)}) {esc}")

    def value(self, schema: Mapping[str, Any], name: str, required: bool, key: str = "") -> str | None:
        """The expression for one value of ``schema``; ``name`` prefixes the rules it needs. None: grounded and
        the request offers no candidate."""
        kind = grounding_kind(key, schema) if self.request is not None and key else None
        if kind is not None:
            return self.grounded(kind, id_schema(key, schema, self.tools) if kind == "id" else schema, name)
        enum = schema.get("enum")
        ptype = str(schema.get("type", "")).lower()
        if enum:
            esc = self.tok[ESCAPE]
            strings = [v for v in enum if isinstance(v, str)]
            if self.request is not None and key and strings:
                # Grounded: a string enum takes only the values the request states (tools.enum_stated: the name
                # or a synonym); none stated leaves the argument out (a required one: the call cannot be made).
                strings = [v for v in strings if enum_stated(v, self.request)]
                if not strings:
                    return None
            alts = [f"{esc} {_lit(v)} {esc}" for v in strings if ESCAPE not in v]
            alts += [_lit(json.dumps(v)) for v in enum if isinstance(v, bool)]
            alts += [_lit(repr(v)) for v in enum if isinstance(v, (int, float)) and not isinstance(v, bool)]
            return self.rule(f"{name}_enum", " | ".join(alts))
        if ptype == "string":
            return self.string(required)
        if ptype == "integer":
            lo, hi = schema.get("minimum"), schema.get("maximum")
            if lo is not None and hi is not None and 0 <= hi - lo < MAX_LISTED_INTEGERS:
                lo_i, hi_i = int(-(-lo // 1)), int(hi // 1)  # ceil(lo), floor(hi)
                return self.rule(f"{name}_int", " | ".join(_lit(str(v)) for v in range(lo_i, hi_i + 1)))
            return "UINT" if lo is not None and lo >= 0 else "INT"
        if ptype == "number":
            return "NUMBER"
        if ptype == "boolean":
            return '("true" | "false")'
        if ptype == "array":
            item = self.value(schema.get("items") or {}, f"{name}_item", False)
            return self.rule(f"{name}_list", f'"[" ({item} ("," {item})*)? "]"')
        if ptype == "object" and schema.get("properties"):
            args = self.arguments(schema, f"{name}_obj")
            return self.rule(f"{name}_obj", f'"{{" {args or ""} "}}"')
        return self.any_value()

    def any_value(self) -> str:
        """A value of no declared type: text, number, boolean, list or object, nested."""
        s = self.string(False)
        self.rule("any", f'{s} | NUMBER | "true" | "false" | "[" (any ("," any)*)? "]" | "{{" (KEY ":" any ("," KEY ":" any)*)? "}}"')
        return "any"

    def arguments(self, params: Mapping[str, Any], name: str) -> str | None:
        """``key:value,...`` in sorted key order (the order ``format.render_arguments_segments`` writes),
        required keys present, optional ones free. Two rules per key: ``first`` (nothing written yet) and
        ``next`` (a comma goes before it), so the size is linear in the number of keys. ``None``: no keys."""
        props: Mapping[str, Any] = params.get("properties") or {}
        required = set(params.get("required") or [])
        values: dict[str, str] = {}
        for j, key in enumerate(sorted(props)):
            expr = self.value(props[key], f"{name}_v{j}", key in required, key)
            if expr is None and key in required:
                raise _Unreachable(key)
            if expr is not None:  # an optional argument the request cannot supply is left out
                values[key] = expr
        keys = list(values)
        n = len(keys)

        def ref(kind: str, j: int) -> str | None:
            return None if j == n else f"{name}_{kind}{j}"

        for j in reversed(range(n)):  # later rules first, so each rule's references exist
            key = keys[j]
            kv = self.rule(f"{name}_kv{j}", f"{_lit(key + ':')} {values[key]}")
            nxt, first = ref("next", j + 1), ref("first", j + 1)
            if key in required:
                self.rule(f"{name}_next{j}", _seq('","', kv, nxt))
                self.rule(f"{name}_first{j}", _seq(kv, nxt))
            else:
                self.rule(f"{name}_next{j}", _seq(f'("," {kv})?', nxt))
                self.rule(f"{name}_first{j}", f"({_seq(kv, nxt)}) | {first}" if first else f"({kv})?")
        return ref("first", 0)

    def build(self, tools: Sequence[Mapping[str, Any]], tool_choice: str = "auto", parallel: bool = True) -> str:
        """``tool_choice`` as in OpenAI's API: ``auto`` (calls or words), ``none`` (words only), ``required`` (one
        call or more), or a tool's name (calls of that tool only). ``parallel=False``: at most one call.
        Raises :class:`_Unreachable` when a call is required and grounding leaves none possible."""
        t = self.tok
        alts = []
        self.tools = tools
        if tool_choice != "none":
            for i, (tool_name, fn) in enumerate(tool_map(tools).items()):
                if tool_choice not in ("auto", "required") and tool_name != tool_choice:
                    continue
                try:
                    args = self.arguments(fn.get("parameters") or {}, f"t{i}")
                except _Unreachable:  # grounded: a required argument the request does not give
                    continue
                alts.append(self.rule(f"t{i}_call", _seq(_lit(tool_name + "{"), args, '"}"')))
        must_call = tool_choice not in ("auto", "none")
        if must_call and not alts:
            raise _Unreachable(tool_choice)
        start = "calls" if must_call else "calls | answer" if alts else "answer"
        header = [
            "%llguidance {}",
            f"start: {start}",
            # The model may also decline in no words at all (or end with <eos>): forbidding that would make a
            # model that wants to stop ramble on to max_new_tokens.
            f"answer: TEXT? ({t[END_OF_TURN]} | {t[EOS]})",
        ]
        if alts:
            header += [f"calls: call{'+' if parallel else ''} {t[START_RESPONSE]}",
                       f'call: {t[START_CALL]} "call:" ({" | ".join(alts)}) {t[END_CALL]}']
        controls = sorted(CONTROL_TOKEN_IDS)
        terminals = [
            # Strings: any text without the delimiter (spelled out, it would read as one); a user's literal
            # "<escape>" cannot survive inside a string in this format.
            rf"STR: /(?s:.+)/ & ~{_without([ESCAPE])}",
            rf"STR_NONBLANK: /(?s:.*{_NOT_BLANK}.*)/ & ~{_without([ESCAPE])}",
            # A words answer: not blank, and no control token spelled out (the parser would take it for one).
            rf"TEXT: /(?s:.*{_NOT_BLANK}.*)/ & ~{_without(controls)}",
            r"INT: /-?(0|[1-9][0-9]*)/",
            r"UINT: /0|[1-9][0-9]*/",
            r"NUMBER: /-?(0|[1-9][0-9]*)(\.[0-9]+)?/",
            r"KEY: /[A-Za-z_][A-Za-z0-9_.\-]*/",
        ]
        if self.span_used:
            # A span of the request's words, not starting or ending in white space, without the delimiter; not
            # starting or ending in a spoken filler ("um translate the screens": fillers are the request's words,
            # never a value's) and never exactly one of the request's ids (an id is an id argument's value).
            not_ids = f" & ~/({'|'.join(self.ids)})/" if self.ids else ""  # ids are letters, digits, - and _: literal
            terminals.append(rf"SPAN: /{_NOT_BLANK}(?s:.*{_NOT_BLANK})?/ & ~{_without([ESCAPE])} & ~/{_FILLER_EDGE}/"
                             + not_ids + " & %regex " + json.dumps({"substring_words": self.request}, ensure_ascii=False))
        return "\n".join(header + self.rules + terminals) + "\n"


def tool_call_grammar(tools: Sequence[Mapping[str, Any]], token_ids: Mapping[str, int] | None = None,
                      request: str | None = None, tool_choice: str = "auto", parallel: bool = True) -> str:
    """The Lark grammar (llguidance dialect) of a model turn for ``tools``; control tokens by id. With
    ``request``, grounded in it (see the module docstring). ``tool_choice`` and ``parallel``: see
    ``_Grammar.build``. When a call is required and grounding leaves none possible, the grammar is the schema's
    alone (the caller asked for a call: it gets the best the model can do, not an error)."""
    tokens = token_ids or CONTROL_TOKEN_IDS
    for grounded_in in ([request, None] if request is not None else [None]):
        try:
            return _Grammar(tokens, grounded_in).build(tools, tool_choice, parallel)
        except _Unreachable:
            continue
    raise ValueError(f"tool_choice {tool_choice!r}: no such tool")


def llguidance_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of ``tokenizer``: ~3 s for a 262k vocabulary (it indexes every token's bytes), so it is
    built once per model and shared by every grammar."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, eos_token=tokenizer.eos_token_id)


class ToolCallConstraint:
    """The grammar compiled for one tokenizer; one :meth:`matcher` per decoded sequence.

    ``allowed`` gives the [rows, vocab] boolean mask of the next choice; ``advance`` consumes the chosen token
    and returns (already consumed) the tokens the grammar then forces. With ``grounded``, ``matcher(request)``
    compiles the grammar grounded in that request (a few ms; the last ``cache_size`` requests are kept)."""

    def __init__(self, tokenizer: Any, tools: Sequence[Mapping[str, Any]], grounded: bool = False,
                 cache_size: int = 256, tool_choice: str = "auto", parallel: bool = True,
                 lltokenizer: Any = None):
        """``tool_choice``, ``parallel``: what the grammar allows (``_Grammar.build``). ``lltokenizer``: an
        already built ``llguidance_tokenizer(tokenizer)`` to share (it costs seconds on a 262k vocabulary)."""
        try:
            import llguidance
        except ImportError as err:  # pragma: no cover - an install problem, not a code path
            raise ImportError(
                "constrained decoding needs llguidance: pip install llguidance (or pass --no-constrained)"
            ) from err
        import torch

        ids = {name: tokenizer.convert_tokens_to_ids(name) for name in CONTROL_TOKEN_IDS}
        self.tools, self.token_ids, self.grounded = list(tools), ids, grounded
        self.tool_choice, self.parallel = tool_choice, parallel
        self._per_request: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self.grammar_text = tool_call_grammar(tools, ids, None, tool_choice, parallel)
        self.lltokenizer = lltokenizer if lltokenizer is not None else llguidance_tokenizer(tokenizer)
        self._llguidance = llguidance
        self._template = self._compile(self.grammar_text, validate=True)
        self.vocab_size = self.lltokenizer.vocab_size
        self._words = (self.vocab_size + 31) // 32
        self._shifts = torch.arange(32, dtype=torch.int32)

    def _compile(self, grammar_text: str, validate: bool = False) -> Any:
        """A matcher for the grammar. ``validate``: first check the grammar against the tokenizer, with llguidance's
        own messages (done once, for the schema grammar; a request's grounded grammar differs from it only in its
        literal alternatives and span terminal)."""
        llg = self._llguidance
        grammar = llg.LLMatcher.grammar_from_lark(grammar_text)
        if validate:
            is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, self.lltokenizer)
            if is_error:
                raise ValueError("the tools give an invalid grammar: " + "; ".join(messages))
        matcher = llg.LLMatcher(self.lltokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"the tools give an invalid grammar: {matcher.get_error()}")
        return matcher

    def matcher(self, request: str | None = None) -> Any:
        """A fresh matcher for one sequence: grounded in ``request`` when the constraint is grounded."""
        if not self.grounded or request is None:
            return self._template.deep_copy()
        template = self._per_request.get(request)
        if template is None:
            template = self._compile(tool_call_grammar(self.tools, self.token_ids, request, self.tool_choice,
                                                       self.parallel))
            self._per_request[request] = template
            if len(self._per_request) > self._cache_size:
                self._per_request.popitem(last=False)
        else:
            self._per_request.move_to_end(request)
        return template.deep_copy()

    def allowed(self, matchers: Sequence[Any], vocab_size: int) -> Any:
        """[len(matchers), vocab_size] bool: the tokens each matcher allows next. Vectorised: llguidance fills
        one bit per token, we unpack the 32-bit words with a shift, no Python loop over the vocabulary."""
        import torch

        bits = torch.zeros((len(matchers), self._words), dtype=torch.int32)
        for i, m in enumerate(matchers):
            # What llguidance.torch.fill_next_token_bitmask does, without importing torch.compile machinery.
            row = bits[i]
            m.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
            if m.is_error():
                raise RuntimeError(f"constrained decoding failed: {m.get_error()}")
        mask = ((bits.unsqueeze(-1) >> self._shifts) & 1).bool().reshape(len(matchers), -1)  # [A, words*32]
        if mask.shape[1] >= vocab_size:
            return mask[:, :vocab_size]
        # Logits wider than the tokenizer (padded embedding tables): the extra ids are never allowed.
        return torch.cat([mask, torch.zeros((len(matchers), vocab_size - mask.shape[1]), dtype=torch.bool)], dim=1)

    def continuation(self, matcher: Any, tokens: Sequence[int]) -> list[int] | None:
        """``tokens`` followed by what the grammar then forces, without moving ``matcher``; ``None`` where the
        grammar does not allow ``tokens`` next."""
        if matcher.validate_tokens(list(tokens)) != len(tokens):
            return None
        ahead = matcher.deep_copy()
        if not ahead.consume_tokens(list(tokens)) or ahead.is_stopped():
            return list(tokens)
        return list(tokens) + list(ahead.compute_ff_tokens())

    def forced(self, request: str | None, tokens: Sequence[int]) -> list[bool]:
        """Per token of a model turn (``tokens``, from its first): whether the grammar forces it there, so that
        decoding appends it without asking the model (:meth:`advance`). The grammar is grounded in ``request`` when
        this constraint is. From a token the grammar rejects on (a gold argument the request does not state), every
        token is free."""
        matcher = self.matcher(request)
        out: list[bool] = []
        for token in tokens:
            ahead = [] if matcher.is_stopped() else matcher.compute_ff_tokens()
            out.append(bool(ahead) and ahead[0] == token)
            if not matcher.consume_token(token):
                return out + [False] * (len(tokens) - len(out))
        return out

    def advance(self, matcher: Any, token: int) -> list[int]:
        """Consume ``token``; return the tokens the grammar forces next (already consumed)."""
        if not matcher.consume_token(token):
            raise RuntimeError(f"constrained decoding: token {token} rejected: {matcher.get_error()}")
        if matcher.is_stopped():
            return []
        forced = list(matcher.compute_ff_tokens())
        if forced and not matcher.consume_tokens(forced):
            raise RuntimeError(f"constrained decoding: forced tokens rejected: {matcher.get_error()}")
        return forced

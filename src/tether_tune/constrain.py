"""Decoding under the tool schema: whatever the model prefers, what comes out parses and validates.

The tools become a grammar over FunctionGemma's model turn (``docs/functiongemma-format.md``)::

    turn   := call+ <start_function_response>  |  [TEXT] (<end_of_turn> | <eos>)
    call   := <start_function_call> "call:" NAME "{" ARGS "}" <end_function_call>
    ARGS   := the tool's arguments in sorted key order, required ones present, each value of its declared type:
              <escape>text<escape> (no "<escape>" inside; not blank when required), an enum member, digits for
              integers (every value of a small minimum..maximum range), true/false, nested lists and objects

The model still chooses between calling and answering in words (its first token), which tool, which optional
arguments, the values, and how many calls; everything else is forced.

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
from .tools import tool_map

#: An integer range with at most this many values is written out value by value (exact bounds);
#: a larger one is "digits" with the sign the minimum allows.
MAX_LISTED_INTEGERS = 256

# Python's str.strip() also strips \x1c-\x1f, which Unicode (and so the regex \s) does not call white space.
_NOT_BLANK = r"[^\s\x1c-\x1f]"


def _lit(text: str) -> str:
    """A Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


def _seq(*parts: str | None) -> str:
    return " ".join(p for p in parts if p)


def _without(names: Sequence[str]) -> str:
    """A regex matching any text that contains one of ``names`` (to be negated with ``~``)."""
    inner = "|".join(n[1:-1] for n in names)  # "<escape>" -> "escape"; the brackets are matched around them
    return rf"/(?s:.*<({inner})>.*)/"


class _Grammar:
    """Builds the Lark text: one rule per tool, per argument chain and per value type."""

    def __init__(self, tokens: Mapping[str, int]):
        self.tok = {name: f"<[{i}]>" for name, i in tokens.items()}
        self.rules: list[str] = []
        self.names: set[str] = set()

    def rule(self, name: str, body: str) -> str:
        if name not in self.names:
            self.names.add(name)
            self.rules.append(f"{name}: {body}")
        return name

    def string(self, required: bool) -> str:
        esc = self.tok[ESCAPE]
        return f"{esc} STR_NONBLANK {esc}" if required else f"{esc} STR? {esc}"

    def value(self, schema: Mapping[str, Any], name: str, required: bool) -> str:
        """The expression for one value of ``schema``; ``name`` prefixes the rules it needs."""
        enum = schema.get("enum")
        ptype = str(schema.get("type", "")).lower()
        if enum:
            esc = self.tok[ESCAPE]
            strings = [v for v in enum if isinstance(v, str)]
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
        keys = sorted(props)
        n = len(keys)

        def ref(kind: str, j: int) -> str | None:
            return None if j == n else f"{name}_{kind}{j}"

        for j in reversed(range(n)):  # later rules first, so each rule's references exist
            key = keys[j]
            kv = self.rule(f"{name}_kv{j}", f"{_lit(key + ':')} {self.value(props[key], f'{name}_v{j}', key in required)}")
            nxt, first = ref("next", j + 1), ref("first", j + 1)
            if key in required:
                self.rule(f"{name}_next{j}", _seq('","', kv, nxt))
                self.rule(f"{name}_first{j}", _seq(kv, nxt))
            else:
                self.rule(f"{name}_next{j}", _seq(f'("," {kv})?', nxt))
                self.rule(f"{name}_first{j}", f"({_seq(kv, nxt)}) | {first}" if first else f"({kv})?")
        return ref("first", 0)

    def build(self, tools: Sequence[Mapping[str, Any]]) -> str:
        t = self.tok
        alts = []
        for i, (tool_name, fn) in enumerate(tool_map(tools).items()):
            args = self.arguments(fn.get("parameters") or {}, f"t{i}")
            alts.append(self.rule(f"t{i}_call", _seq(_lit(tool_name + "{"), args, '"}"')))
        header = [
            "%llguidance {}",
            "start: calls | answer",
            f"calls: call+ {t[START_RESPONSE]}",
            # The model may also decline in no words at all (or end with <eos>): forbidding that would make a
            # model that wants to stop ramble on to max_new_tokens.
            f"answer: TEXT? ({t[END_OF_TURN]} | {t[EOS]})",
            f'call: {t[START_CALL]} "call:" ({" | ".join(alts)}) {t[END_CALL]}',
        ]
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
        return "\n".join(header + self.rules + terminals) + "\n"


def tool_call_grammar(tools: Sequence[Mapping[str, Any]], token_ids: Mapping[str, int] | None = None) -> str:
    """The Lark grammar (llguidance dialect) of a model turn for ``tools``; control tokens by id."""
    return _Grammar(token_ids or CONTROL_TOKEN_IDS).build(tools)


class ToolCallConstraint:
    """The grammar compiled for one tokenizer; one :meth:`matcher` per decoded sequence.

    ``allowed`` gives the [rows, vocab] boolean mask of the next choice; ``advance`` consumes the chosen token
    and returns (already consumed) the tokens the grammar then forces."""

    def __init__(self, tokenizer: Any, tools: Sequence[Mapping[str, Any]]):
        try:
            import llguidance
            import llguidance.hf
        except ImportError as err:  # pragma: no cover - an install problem, not a code path
            raise ImportError(
                "constrained decoding needs llguidance: pip install llguidance (or pass --no-constrained)"
            ) from err
        import torch

        ids = {name: tokenizer.convert_tokens_to_ids(name) for name in CONTROL_TOKEN_IDS}
        self.grammar_text = tool_call_grammar(tools, ids)
        # ~3 s for a 262k vocabulary (it indexes every token's bytes): once per Predictor.
        self.lltokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=tokenizer.eos_token_id)
        self.grammar = llguidance.LLMatcher.grammar_from_lark(self.grammar_text)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(self.grammar, self.lltokenizer)
        if is_error:
            raise ValueError("the tools give an invalid grammar: " + "; ".join(messages))
        self._llguidance = llguidance
        self._template = llguidance.LLMatcher(self.lltokenizer, self.grammar, log_level=0)
        if self._template.is_error():
            raise ValueError(f"the tools give an invalid grammar: {self._template.get_error()}")
        self.vocab_size = self.lltokenizer.vocab_size
        self._words = (self.vocab_size + 31) // 32
        self._shifts = torch.arange(32, dtype=torch.int32)

    def matcher(self) -> Any:
        return self._template.deep_copy()

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

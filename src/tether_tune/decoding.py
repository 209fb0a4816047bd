"""Greedy decoding over a shared prefix KV cache: the engine under ``tether_tune.predict``.

How the cache is kept exact (and why not transformers' own masks): Gemma 3 alternates sliding-window layers
(window 512) with full-attention ones, and the prefix alone is longer than the window. transformers'
``DynamicSlidingWindowLayer`` keeps only the last ``window - 1`` cache *slots*, and its masks measure the
window in slots too; as soon as a batch holds padding, slots and positions differ and a padded row would see
the wrong keys. So we keep every slot (a plain ``DynamicCache()``: full layers, nothing evicted), remember the
position of each slot per row (``-1`` for padding), and build both masks ourselves from positions: a query at
position ``p`` sees the valid slots at positions ``<= p``, and in sliding layers only those ``> p - window``.
That is the model's definition of attention, whatever the padding, so a batch row computes what the row alone
would (up to float summation order), and the result equals ``model.generate`` on the full prompt.

Three things ride on the same loop: the grammar (``tether_tune.constrain``: a mask on each choice, and forced
tokens fed without a choice), prompt-lookup drafts (tokens copied from the request, verified in one forward),
and batching (rows of different lengths, left-padded; padding is just slots with position ``-1``).
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

from .constrain import asked_tools, left_open, skips_enum, skips_tools, unsaid_enum
from .format import CONTROL_TOKEN_IDS, END_CALL, START_CALL, START_RESPONSE

START_CALL_ID = CONTROL_TOKEN_IDS[START_CALL]
END_CALL_ID = CONTROL_TOKEN_IDS[END_CALL]
START_RESPONSE_ID = CONTROL_TOKEN_IDS[START_RESPONSE]

#: Default ``head_limit``: score only the allowed tokens when the grammar allows at most this many. Any value
#: from a few hundred to tens of thousands gives the same split on CodeTether's tools (a choice allows at most
#: ~100 tokens, or the whole vocabulary); the cost of scoring k rows stays well under the whole head's below it.
HEAD_LIMIT = 4096

#: What the ``--head_limit`` flags say.
HEAD_LIMIT_HELP = ("with --constrained: where the grammar allows at most this many tokens, compute the output head "
                   "for those alone (the same choice, for a few dot products instead of 262k); 0: the whole head "
                   "every time")


def _region(name: str) -> Any:
    """A named region for ``torch.profiler`` (``tether::forward``, ``::head``, ``::grammar``: where a request's time
    goes, ``benchmarks/bench_latency.py --profile``); a few microseconds when no profiler runs."""
    import torch

    return torch.profiler.record_function(f"tether::{name}")


@dataclass
class _Rows:
    """The KV cache of a batch and, per row, the position of each cache slot (``-1``: padding)."""

    cache: Any  # transformers DynamicCache, keys/values [B, kv_heads, S, head_dim] per layer
    kv_pos: Any  # LongTensor [B, S]
    next_pos: list[int]  # per row: the position of its next token


def _attention_masks(model: Any, kv_pos: Any, q_pos: Any, q_valid: Any) -> dict[str, Any]:
    """Both of Gemma 3's masks, built from positions: ``{"full_attention", "sliding_attention"}`` -> [B,1,Q,S].

    ``kv_pos`` [B, S] (``-1`` = padding slot), ``q_pos`` [B, Q], ``q_valid`` [B, Q]. A padding query sees slot 0
    only (``<bos>``): a row with no visible key would give NaN, and NaN times a zero weight is still NaN."""
    import torch

    cfg = model.config
    k = kv_pos[:, None, :]  # [B, 1, S]
    q = q_pos[:, :, None]  # [B, Q, 1]
    full = (k >= 0) & (k <= q)  # [B, Q, S]
    pad_query = ~q_valid[:, :, None]
    first_slot = torch.zeros_like(full)
    first_slot[:, :, 0] = True
    masks = {"full_attention": torch.where(pad_query, first_slot, full)}
    window = getattr(cfg, "sliding_window", None)
    if window:
        masks["sliding_attention"] = torch.where(pad_query, first_slot, full & (k > q - window))
    masks = {name: m[:, None] for name, m in masks.items()}
    if getattr(cfg, "_attn_implementation", "sdpa") != "sdpa":  # eager attention adds the mask to the scores
        dtype = next(model.parameters()).dtype
        neg = torch.finfo(dtype).min
        masks = {name: torch.zeros(m.shape, dtype=dtype).masked_fill(~m, neg) for name, m in masks.items()}
    for layer_type in set(getattr(cfg, "layer_types", None) or ["full_attention"]):
        masks.setdefault(layer_type, masks["full_attention"])
    return masks


def _forward(model: Any, rows: _Rows, chunks: Sequence[Sequence[int]], pad_id: int, keep: int = 1,
             head: "Head | None" = None) -> Any:
    """Feed each row its own run of new tokens (possibly none) in one forward; return the logits after each
    row's last ``keep`` tokens, [B, keep, V]. Runs are left-padded so that every row's last token is in the
    last column. With ``head``: the decoder's (normed) hidden states there instead, [B, keep, H], for ``head``
    to score on demand."""
    import torch

    width = max(1, max(len(c) for c in chunks))
    B = len(chunks)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    q_pos = torch.zeros((B, width), dtype=torch.long)
    q_valid = torch.zeros((B, width), dtype=torch.bool)
    for b, chunk in enumerate(chunks):
        n = len(chunk)
        if n:
            ids[b, width - n :] = torch.tensor(chunk, dtype=torch.long)
            q_pos[b, width - n :] = torch.arange(rows.next_pos[b], rows.next_pos[b] + n)
            q_valid[b, width - n :] = True
            rows.next_pos[b] += n
    rows.kv_pos = torch.cat([rows.kv_pos, torch.where(q_valid, q_pos, -1)], dim=1)
    masks = _attention_masks(model, rows.kv_pos, q_pos, q_valid)
    device = model.device
    inputs = dict(
        input_ids=ids.to(device),
        position_ids=q_pos.to(device),
        attention_mask={k: v.to(device) for k, v in masks.items()},
        use_cache=True,
    )
    # The LM head (63% of the weights) only where a token is chosen: the decoder, then the head (split) on the
    # last ``keep`` positions. With ``head``, decoding scores them itself, on demand.
    split = head if head is not None else Head.of(model, limit=1)
    if split is None:  # a wrapper without get_decoder / get_output_embeddings: the model's own logits_to_keep
        with _region("forward+head"):
            out = model(**inputs, logits_to_keep=keep, **{_cache_kwarg(model): rows.cache})
        return out.logits[:, -keep:, :].float().cpu()  # [B, keep, V]
    with _region("forward"):
        out = split.decoder(**inputs, **{_cache_kwarg(split.decoder): rows.cache})
    hidden = out.last_hidden_state[:, -keep:, :]  # [B, keep, H]
    return hidden if head is not None else split.full(hidden)  # [B, keep, H] with head, else [B, keep, V]


def _reject(rows: _Rows, b: int, n: int) -> None:
    """Forget the last ``n`` slots of row ``b`` (rejected draft tokens): they stay in the cache, as padding."""
    if n:
        rows.kv_pos[b, -n:] = -1
        rows.next_pos[b] -= n


class Head:
    """The model's output head, split off its decoder: the scores of every token at a position, or of a few.

    A tied 262k x 640 head is 63% of the weights a forward reads; where the grammar allows only a few tokens
    (a tool or argument name, an enum value, a digit, a span of the request), their rows alone give the same
    choice for a few dot products. ``limit``: the most allowed tokens scored row by row; above it (the first
    token, free text) the whole head runs, once for all the positions still to be decided in that forward."""

    def __init__(self, model: Any, limit: int):
        import torch

        self.decoder = model.get_decoder()
        self.module = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.vocab_size = int(getattr(self.module, "out_features", 0) or self.weight.shape[0])
        self.limit = limit
        self._torch = torch

    @functools.cached_property
    def weight(self) -> Any:
        """[V, H], for :meth:`rows`: for a tied float head, the embedding itself (no copy); dequantized once for
        torch.ao's dynamically quantized Linear (its ``weight()`` is the int8 tensor)."""
        weight = self.module.weight
        return weight().dequantize() if callable(weight) else weight

    @classmethod
    def of(cls, model: Any, limit: int) -> "Head | None":
        """The split head of ``model``, or ``None`` where it cannot be split (``limit`` 0, or a wrapper without
        ``get_decoder``/``get_output_embeddings``): decoding then takes the model's own logits."""
        if limit <= 0 or not hasattr(model, "get_decoder") or not hasattr(model, "get_output_embeddings"):
            return None
        if model.get_output_embeddings() is None:
            return None
        return cls(model, limit)

    def _cap(self, logits: Any) -> Any:
        if self.softcap is None:
            return logits
        return self._torch.tanh(logits / self.softcap) * self.softcap

    def full(self, hidden: Any) -> Any:
        """[..., H] -> [..., V] float: what the model's forward computes.

        The head runs on a contiguous [N, H]. Handed a strided [B, keep, H] slice (what the model's own
        ``logits_to_keep`` does), torch's matmul does not fold the batch into one product with a frozen weight: it
        expands the 262k x 640 head to [B, 640, 262k] for a bmm, a 2.7 GB copy that took 5.8 s of a 6 s forward at
        batch 8 (benchmarks/bench_head.py)."""
        with _region("head"), self._torch.inference_mode():
            flat = self.module(hidden.reshape(-1, hidden.shape[-1]))
            return self._cap(flat).float().cpu().view(*hidden.shape[:-1], -1)

    def rows(self, hidden: Any, ids: Any) -> Any:
        """[H], LongTensor [k] -> [k] float: the same scores for the tokens ``ids`` only."""
        torch = self._torch
        with _region("head rows"), torch.inference_mode():  # also when scores are asked for after the forward
            w = self.weight[ids.to(self.weight.device)]
            return self._cap(torch.nn.functional.linear(hidden.to(w.dtype), w)).float().cpu()


class _Scores:
    """One row's scores after a forward, at its ``keep`` positions: given (the model's logits, [keep, V]), or
    computed from the hidden states ([keep, H]) on demand — only at the positions decoding reaches (a rejected
    draft ends it), and only for the allowed tokens where they are few."""

    def __init__(self, logits: Any = None, hidden: Any = None, head: Head | None = None):
        self.logits, self.hidden, self.head = logits, hidden, head
        self.vocab_size = int(logits.shape[-1]) if logits is not None else head.vocab_size  # type: ignore[union-attr]
        self._full: dict[int, Any] = {}

    @property
    def restricted(self) -> bool:
        return self.head is not None

    def full(self, i: int) -> Any:
        """[V] at position ``i``. Split: the whole head runs once, for ``i`` and every later position."""
        if self.logits is not None:
            return self.logits[i]
        if i not in self._full:
            for j, row in enumerate(self.head.full(self.hidden[i:]), start=i):  # type: ignore[union-attr]
                self._full[j] = row
        return self._full[i]

    def rows(self, i: int, ids: Any) -> Any:
        """[k] at position ``i``, for the tokens ``ids`` only."""
        if i in self._full:
            return self._full[i][ids]
        return self.head.rows(self.hidden[i], ids)  # type: ignore[union-attr]


def lookup_draft(context: Sequence[int], source: Sequence[int], k: int, max_ngram: int = 3, min_ngram: int = 2) -> list[int]:
    """Prompt lookup: if the last ``n`` tokens of ``context`` (n = max_ngram..min_ngram) occur in ``source``, the
    up to ``k`` tokens that followed them there. Tool calls copy ids, titles and messages from the request, so the
    model's own next tokens are often these; the model verifies them all in one forward.

    At least a bigram must match: a single common token (a space, "the") matches somewhere in almost any
    request, and a wrong draft costs its tokens in the forward and their 262k-entry logits. Copying a UUID starts
    one token later, then drafts the rest."""
    if k <= 0:
        return []
    for n in range(min(max_ngram, len(context)), min_ngram - 1, -1):
        tail = list(context[-n:])
        for i in range(len(source) - n):
            if list(source[i : i + n]) == tail:
                return list(source[i + n : i + n + k])
    return []


class Outputs:
    """Drafts from earlier answers: turns repeat what earlier turns said (the same refusal word for word,
    ``call:list_tasks{status:<escape>``, ``<escape>,message:<escape>``). An index of the n-grams of the last
    answers (n = 2, 3; the start of the turn counts as a token), each mapped to the tokens that followed it the
    last time. Drafts only save forwards: each is verified, so what earlier requests said never changes an
    answer. Bounded: the oldest n-grams go first."""

    START = -1  # the start of a turn, so that a turn's first token has a bigram of its own
    K = 16  # tokens kept after each n-gram

    def __init__(self, max_ngrams: int = 50_000):
        from collections import OrderedDict

        self.index: "OrderedDict[tuple[int, ...], tuple[int, ...]]" = OrderedDict()
        self.max_ngrams = max_ngrams

    def add(self, ids: Sequence[int]) -> None:
        seq = [self.START, *ids]
        for n in (2, 3):
            for i in range(len(seq) - n):
                key = tuple(seq[i : i + n])
                self.index[key] = tuple(seq[i + n : i + n + self.K])
                self.index.move_to_end(key)
        while len(self.index) > self.max_ngrams:
            self.index.popitem(last=False)

    def draft(self, out: Sequence[int], k: int) -> list[int]:
        """What followed the last 3 (else 2) tokens of ``out`` (the turn so far) the last time; [] if unseen."""
        seq = [self.START, *out[-3:]] if len(out) < 3 else list(out[-3:])
        for n in (3, 2):
            hit = self.index.get(tuple(seq[-n:])) if len(seq) >= n else None
            if hit:
                return list(hit[:k])
        return []


def _cache_kwarg(model: Any) -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class PrefixCache:
    """The shared prefix (developer turn with the declarations): its ids and its KV cache, batch 1."""

    ids: list[int]
    cache: Any

    @classmethod
    def build(cls, model: Any, ids: list[int]) -> "PrefixCache":
        import torch
        from transformers import DynamicCache

        # No config: full (never-evicting) layers for every layer type; the sliding window is in our masks.
        rows = _Rows(cache=DynamicCache(), kv_pos=torch.zeros((1, 0), dtype=torch.long), next_pos=[0])
        with torch.inference_mode():
            _forward(model, rows, [ids], pad_id=0)
        return cls(ids=list(ids), cache=rows.cache)

    def rows(self, batch_size: int) -> _Rows:
        """A private copy of the cache for ``batch_size`` rows: decoding appends to it (``torch.cat`` makes new
        tensors, but we copy anyway rather than rely on that)."""
        import torch

        cache = copy.deepcopy(self.cache)
        if batch_size > 1:
            cache.batch_repeat_interleave(batch_size)
        n = len(self.ids)
        kv_pos = torch.arange(n, dtype=torch.long)[None].repeat(batch_size, 1)
        return _Rows(cache=cache, kv_pos=kv_pos, next_pos=[n] * batch_size)


@dataclass
class Sampling:
    """Sampling instead of greedy for one row: scores divided by ``temperature`` (> 0), then nucleus ``top_p``,
    drawn with ``generator`` (a seeded ``torch.Generator`` gives the same draws again). Drafts stay exact: a
    draft token is kept only when the draw at its position is that token."""

    temperature: float
    top_p: float = 1.0
    generator: Any = None


@dataclass
class Decoded:
    ids: list[int]  # the new tokens, the stop token included
    stats: dict[str, float]


def repeated_call(ids: Sequence[int]) -> int | None:
    """Where the call that ``ids`` ends with (``<start_function_call>`` ... ``<end_function_call>``) starts, when
    an earlier call in ``ids`` is the same tokens; else ``None``."""
    starts = [i for i, t in enumerate(ids) if t == START_CALL_ID]
    if len(starts) < 2:
        return None
    last = list(ids[starts[-1]:])
    for s in starts[:-1]:
        if list(ids[s : s + len(last)]) == last:
            return starts[-1]
    return None


#: The most tokens a choice between a call's arguments allows (its keys, a comma, the closing brace); where the
#: grammar allows more, the ``enum`` bias does not apply.
MAX_ENUM_CHOICES = 64


def passing_test(kind: str, tools: Sequence[Any], request: str, said: str) -> Callable[[str], bool] | None:
    """Where a choice decoding weighs with a calibrated bias comes up, the test of a token's text that passes it
    by; ``None`` elsewhere. ``kind``: ``enum`` — an optional enum argument the request states and the call in
    progress has not set (``constrain.unsaid_enum``; passed by with ``constrain.skips_enum``); ``tool`` — a tool
    name, while the request asks for a tool no call has answered (``constrain.asked_tools``; passed by with
    ``constrain.skips_tools``). ``said``: the model turn so far, as text."""
    if kind == "enum":
        unsaid = unsaid_enum(tools, request, said)
        return None if unsaid is None else lambda text: skips_enum(text, *unsaid)
    if kind == "tool":
        asked = asked_tools(tools, request, said)
        return None if asked is None else lambda text: skips_tools(text, *asked)
    raise ValueError(f"weighed choice {kind!r}: expected enum or tool")


def passing(allowed: Any, test: Callable[[str], bool], texts: dict[int, str], decode: Callable[[list[int]], str],
            limit: int | None = None) -> tuple[list[int], list[int]]:
    """At a choice :func:`passing_test` found: ``(ids, passing)``, the tokens the grammar allows (``allowed``, a
    bool mask over the vocabulary) and those of them ``test`` says pass it by; ``([], [])`` where it allows more
    than ``limit`` (an enum's: ``MAX_ENUM_CHOICES``, not a choice between keys). ``texts``: each token's text, filled
    from ``decode`` as needed (kept by the caller between choices)."""
    ids = allowed.nonzero()[:, 0].tolist()
    if limit is not None and len(ids) > limit:
        return [], []
    for t in ids:
        if t not in texts:
            texts[t] = decode([t])
    return ids, [t for t in ids if test(texts[t])]


#: The choices decoding weighs, each with the most tokens the grammar may allow there.
WEIGHED = {"enum": MAX_ENUM_CHOICES, "tool": None}


class Biases(NamedTuple):
    """The calibrated biases decoding applies (:func:`decode_greedy`; chosen by ``calibrate.py``): at the first
    answer token (``call``; ``call_open`` instead where the request asks for something by an id or a tool's words,
    or ``None``), after a call (``next_call``; ``open`` instead while the request asks for something no call has
    answered, or ``None``), and the weighed choices of the grammar (``enum``, ``tool``). All 0 / ``None``: plain
    greedy decoding."""

    call: float = 0.0
    next_call: float = 0.0
    open: float | None = None
    enum: float = 0.0
    tool: float = 0.0
    call_open: float | None = None


class _Greedy:
    """The state of one greedy decoding: per row, the tokens decided so far, how many were forced by the grammar
    or accepted from drafts, whether it has ended, its grammar matcher and its draft source."""

    def __init__(self, suffixes: Sequence[Sequence[int]], stop_ids: Sequence[int], max_new_tokens: int | Sequence[int],
                 constraint: Any, speculate: int, sources: Sequence[Sequence[int]] | None,
                 requests: Sequence[str] | None = None, biases: Biases = Biases(),
                 sampling: Sequence[Sampling | None] | None = None, outputs: Outputs | None = None,
                 decode: Callable[[list[int]], str] | None = None, open_in: Sequence[str | None] | None = None):
        B = len(suffixes)
        self.outputs = outputs
        if (biases.open is not None or biases.enum or biases.tool) and decode is None:
            raise ValueError("the open, enum and tool biases need decode (the tokens said so far, as text)")
        self.biases, self.decode = biases, decode
        self.token_text: dict[int, str] = {}  # one token's text, for the weighed choices
        self.stop, self.speculate = set(stop_ids), speculate
        self.limits = [max_new_tokens] * B if isinstance(max_new_tokens, int) else list(max_new_tokens)
        self.sampling = list(sampling) if sampling is not None else [None] * B
        self.out: list[list[int]] = [[] for _ in range(B)]
        self.forced, self.accepted, self.done = [0] * B, [0] * B, [False] * B
        requests = requests or [None] * B  # type: ignore[list-item]
        self.open_in = list(open_in) if open_in is not None else list(requests)  # where to look for what is open
        # One constraint for all rows, or one per row (None: that row is free).
        self.constraints = list(constraint) if isinstance(constraint, (list, tuple)) else [constraint] * B
        with _region("grammar"):  # a grounded grammar is compiled per request (a few ms), then cached
            self.matchers = [c.matcher(r) if c is not None else None for c, r in zip(self.constraints, requests)]
        self.sources = sources or [[] for _ in range(B)]
        self.pending: list[list[int]] = [list(s) for s in suffixes]  # decided, not yet fed to the model
        self.drafts: list[list[int]] = [[] for _ in range(B)]  # guessed, fed along to be verified
        if speculate:
            # The call draft: most turns are calls, so the first forward also feeds <start_function_call> and
            # what the grammar forces after it; when the model calls, its tool-name choice comes in that forward.
            self.drafts = [c.continuation(m, [START_CALL_ID]) or [] if c is not None else []
                           for c, m in zip(self.constraints, self.matchers)]

    def say(self, b: int, tokens: list[int], n_forced: int) -> list[int]:
        """Append decided tokens to row b; return those still to be fed to the model ([] when the row ends).
        A call that repeats one this turn already made, token for token, ends the calls instead: it is dropped
        and ``<start_function_response>`` takes its place (the same task cancelled twice is never meant)."""
        for i, t in enumerate(tokens):
            self.out[b].append(t)
            self.forced[b] += i >= len(tokens) - n_forced
            if t == END_CALL_ID and (start := repeated_call(self.out[b])) is not None:
                del self.out[b][start:]
                self.out[b].append(START_RESPONSE_ID)
                self.done[b] = True
                return []
            if t in self.stop or len(self.out[b]) >= self.limits[b]:
                self.done[b] = True
                return []
        return tokens

    def committed(self, b: int) -> int:
        """How many of row b's tokens are final: all of them for words or an ended row; for calls, up to the last
        ``<end_function_call>`` (a call in progress may still be dropped as a repeat)."""
        out = self.out[b]
        if self.done[b] or not out or out[0] != START_CALL_ID:
            return len(out)
        return max((i + 1 for i, t in enumerate(out) if t == END_CALL_ID), default=0)

    def first_bias(self, b: int) -> float:
        """The bias on a call at the first answer token: ``biases.call_open`` where the request asks for something by
        an id or a tool's words (``constrain.left_open`` before any call), ``biases.call`` otherwise (and always,
        without the former)."""
        asked = self.open_in[b]
        if self.biases.call_open is not None and asked is not None and left_open(asked, ""):
            return self.biases.call_open
        return self.biases.call

    def after_call_bias(self, b: int) -> float:
        """The bias on another call right after one: ``biases.open`` while the request still asks for something no
        call has answered (``constrain.left_open``: an id no call has used, or a tool asked for in more clauses than
        it has calls), ``biases.next_call`` otherwise (and always, without the former)."""
        asked = self.open_in[b]
        if self.biases.open is not None and asked is not None:
            if left_open(asked, self.decode(self.out[b])):  # type: ignore[misc]
                return self.biases.open
        return self.biases.next_call

    def weighed(self, b: int, allowed: Any) -> list[tuple[float, list[int]]]:
        """The biases taken from allowed tokens at row b's next choice, each with the tokens it weighs down: where
        the call in progress has an optional enum argument the request states and the model has not set,
        ``biases.enum`` from those that pass it by; in a tool's name while the request asks for a tool no call has
        answered, ``biases.tool`` from those that lead to another tool (:func:`passing_test`). [] elsewhere."""
        asked, constraint = self.open_in[b], self.constraints[b]
        out = self.out[b]
        if allowed is None or asked is None or not out or out[0] != START_CALL_ID:
            return []
        said = None
        weighed = []
        for kind, bias in (("enum", self.biases.enum), ("tool", self.biases.tool)):
            if bias:
                said = self.decode(out) if said is None else said  # type: ignore[misc]
                test = passing_test(kind, constraint.tools, asked, said)
                if test is not None:
                    skips = passing(allowed, test, self.token_text, self.decode,  # type: ignore[arg-type]
                                    WEIGHED[kind])[1]
                    if skips:
                        weighed.append((bias, skips))
        return weighed

    def choose(self, b: int, scores: _Scores, i: int) -> tuple[int, list[int]]:
        """Greedy's token at position ``i`` (under the grammar), and the tokens the grammar forces after it. At
        the first position, ``biases.call`` (or ``biases.call_open``: :meth:`first_bias`) is added to the score of
        ``<start_function_call>`` (call or words);
        right after a ``<end_function_call>``, ``biases.next_call`` is (another call, or the end of the calls).
        Between the arguments of a call, ``biases.enum`` is taken from the tokens that would pass by an enum argument
        the request states, and in a tool's name ``biases.tool`` from those that lead away from the tools the request
        asks for (:meth:`weighed`). Where the grammar allows at most the head's ``limit`` tokens, only
        their scores are computed: the same choice (masked tokens are never chosen), for a few dot products."""
        import torch

        out = self.out[b]
        bias = self.first_bias(b) if not out else self.after_call_bias(b) if out[-1] == END_CALL_ID else 0.0
        constraint, matcher = self.constraints[b], self.matchers[b]
        sampling = self.sampling[b]
        with _region("grammar"):
            allowed = constraint.allowed([matcher], scores.vocab_size)[0] if constraint is not None else None
            weighed = self.weighed(b, allowed)
        ids = None
        if allowed is not None and scores.restricted and int(allowed.sum()) <= scores.head.limit:  # type: ignore[union-attr]
            ids = allowed.nonzero()[:, 0]  # ascending: argmax breaks ties as the full argmax does
            logits = scores.rows(i, ids)
            if bias:
                logits = logits + bias * (ids == START_CALL_ID).to(logits.dtype)
            for weight, skips in weighed:
                logits = logits - weight * torch.isin(ids, torch.tensor(skips)).to(logits.dtype)
        else:
            logits = scores.full(i)
            if bias or weighed:
                logits = logits.clone()
                logits[START_CALL_ID] += bias
                for weight, skips in weighed:
                    logits[skips] -= weight
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
        pick = int(logits.argmax()) if sampling is None else _sample(logits, sampling)
        token = pick if ids is None else int(ids[pick])
        if constraint is None:
            return token, []
        with _region("grammar"):
            return token, constraint.advance(matcher, token)

    def step(self, b: int, rows: _Rows, scores: _Scores, keep: int) -> None:
        """Row b after a forward: verify its drafts one by one against greedy's choices (``scores`` at ``keep``
        positions), decide the next tokens, and look up new drafts. A draft may run through tokens the grammar
        forces (the call draft does): those that match are already in the cache too."""
        draft, self.pending[b], self.drafts[b] = self.drafts[b], [], []
        j = keep - 1 - len(draft)  # the position after the last pending token
        i = 0  # draft tokens verified (they are in the cache)
        while True:
            token, after = self.choose(b, scores, j + i)
            if i >= len(draft) or token != draft[i]:  # a fresh choice: the drafts from here on were wrong
                _reject(rows, b, len(draft) - i)
                self.pending[b] = self.say(b, [token] + after, len(after))
                break
            self.accepted[b] += 1  # greedy's own choice: already in the cache
            i += 1
            self.say(b, [token], 0)
            if self.done[b]:
                break
            if not after:
                continue
            m = 0  # forced tokens follow: those the draft guessed are in the cache as well
            while m < len(after) and i + m < len(draft) and draft[i + m] == after[m]:
                m += 1
            self.say(b, after, len(after))
            if self.done[b]:
                break
            if m < len(after):  # the other forced tokens go in next; the drafts after them do not
                _reject(rows, b, len(draft) - i - m)
                self.pending[b] = after[m:]
                break
            i += m
        if not self.done[b] and self.speculate:
            self.drafts[b] = lookup_draft(self.out[b], self.sources[b], self.speculate, min_ngram=1)
            if not self.drafts[b] and self.outputs is not None:
                self.drafts[b] = self.outputs.draft(self.out[b], self.speculate)


def _sample(logits: Any, sampling: Sampling) -> int:
    """One draw from softmax(logits / temperature), restricted to the smallest set of tokens whose probability
    reaches ``top_p`` (masked tokens are ``-inf`` and never drawn)."""
    import torch

    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= sampling.top_p  # the top token always stays
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return int(torch.multinomial(probs, 1, generator=sampling.generator))


def decode_greedy(
    model: Any,
    prefix: PrefixCache,
    suffixes: Sequence[Sequence[int]],
    stop_ids: Sequence[int],
    max_new_tokens: int | Sequence[int],
    constraint: Any = None,
    pad_id: int = 0,
    speculate: int = 0,
    sources: Sequence[Sequence[int]] | None = None,
    requests: Sequence[str] | None = None,
    biases: Biases = Biases(),
    sampling: Sequence[Sampling | None] | None = None,
    on_tokens: Callable[[int, list[int]], None] | None = None,
    head_limit: int = 0,
    outputs: Outputs | None = None,
    decode: Callable[[list[int]], str] | None = None,
    open_in: Sequence[str | None] | None = None,
) -> list[Decoded]:
    """Greedy decoding of each suffix after the shared prefix, all rows in one batch.

    ``constraint``: a :class:`tether_tune.constrain.ToolCallConstraint` (or ``None``). With it, each choice is
    masked to what the tool grammar allows, and the tokens it forces are appended without a choice: they go
    through the model (to extend the cache) together with the chosen token, in the same forward.

    ``speculate`` > 0: up to that many draft tokens looked up in ``sources[b]`` (the request's own tokens) ride
    along in each forward; each is kept only if it is what greedy decoding would have chosen there (under the
    grammar too), so the output is the same tokens, in fewer forwards. Rejected drafts become padding slots.

    ``requests``: the request text of each row, for a grounded ``constraint`` (its grammar is built per request).

    ``biases`` (:class:`Biases`, calibrated by ``calibrate.py``; the default is plain greedy):
    ``call`` is added to the score of ``<start_function_call>`` at the first position only: the decision between a
    call and words. ``call_open`` (with ``requests``): used there instead where the request asks for something by
    an id or a tool's words (``constrain.left_open`` before any call); ``None``: ``call`` for every request.
    ``next_call``: the same, right after each ``<end_function_call>`` (another call, or
    ``<start_function_response>``). ``open`` (with ``requests`` and ``decode``, the row's tokens as text): used
    there instead while the request asks for something no call has answered yet (``constrain.left_open``);
    ``None``: ``next_call`` after every call. ``open_in``: per row, the text whose ids and asks count (``None``:
    none), where it is not the request (a conversation's last user message).
    ``enum`` (with a ``constraint`` and ``decode``): taken from the score of each token that would pass by an
    optional enum argument the request states and the call has not set (``constrain.unsaid_enum``): "show me the
    failed tasks" gets its ``status``. The same rows' ``open_in`` text is where the values are looked for.
    ``tool`` (the same): taken from the score of each token of a tool's name that leads away from the tools
    the request asks for and no call has answered (``constrain.asked_tools``): "… and pull up the chat log of
    session B" after a first call gets ``get_session_history``.

    ``max_new_tokens``: one limit, or one per row. ``sampling``: per row, ``None`` (greedy) or a
    :class:`Sampling`. ``on_tokens(row, tokens)``: called with each row's newly final tokens after every
    forward (streaming): words as decided, a call's tokens once it has ended; a stop token is the last it gets.

    A call that repeats, token for token, one the turn already made ends the calls: it is dropped and
    ``<start_function_response>`` follows the calls before it (:func:`repeated_call`).

    ``constraint`` may also be one constraint per row (rows that differ in tool choice share a batch).

    ``head_limit`` > 0 (with a constraint): where the grammar allows at most that many tokens, only their rows
    of the output head are computed (:class:`Head`); the choices are the same. 0: the model's full logits.

    ``outputs`` (with ``speculate``): earlier answers to draft from where the request has nothing to copy
    (:class:`Outputs`); this decoding's answers are added to it.
    """
    import torch

    B = len(suffixes)
    g = _Greedy(suffixes, stop_ids, max_new_tokens, constraint, speculate, sources, requests, biases, sampling,
                outputs if speculate else None, decode, open_in)
    reported = [0] * B
    calls, t_prefill = 0, None
    has_constraint = any(c is not None for c in g.constraints)
    head = Head.of(model, head_limit) if has_constraint else None
    with torch.inference_mode():
        t0 = time.perf_counter()
        rows = prefix.rows(B)
        while not all(g.done):
            keep = 1 + max(len(d) for d in g.drafts)
            out = _forward(model, rows, [g.pending[b] + g.drafts[b] for b in range(B)], pad_id, keep, head)
            calls += 1
            t_prefill = time.perf_counter() - t0 if t_prefill is None else t_prefill
            for b in range(B):
                if not g.done[b]:
                    scores = _Scores(hidden=out[b], head=head) if head is not None else _Scores(logits=out[b])
                    g.step(b, rows, scores, keep)
                    if on_tokens is not None and (final := g.committed(b)) > reported[b]:
                        on_tokens(b, g.out[b][reported[b]:final])
                        reported[b] = final
        total = time.perf_counter() - t0
    if g.outputs is not None:
        for ids in g.out:
            g.outputs.add(ids)
    stats = {"prefill_s": t_prefill or 0.0, "decode_s": total - (t_prefill or 0.0), "forward_calls": float(calls)}
    return [
        Decoded(ids, {**stats, "new_tokens": float(len(ids)), "forced_tokens": float(n), "draft_tokens": float(a)})
        for ids, n, a in zip(g.out, g.forced, g.accepted)
    ]


def first_token_logits(model: Any, prefix: PrefixCache, suffixes: Sequence[Sequence[int]], pad_id: int = 0) -> Any:
    """[B, V] scores of the first token each suffix's answer would start with (one forward, no decoding)."""
    return last_logits(model, prefix, suffixes, 1, pad_id)[:, -1]


def teacher_forced_scores(model: Any, prefix: PrefixCache, suffixes: Sequence[Sequence[int]], keeps: Sequence[int],
                          pad_id: int = 0) -> list[_Scores]:
    """Per suffix, its scores after each of its last ``keeps[b]`` tokens (one forward, teacher-forced), computed on
    demand: ``rows(i, ids)`` scores only the tokens asked for, where :func:`last_logits` runs the 262k-row head at
    every position."""
    import torch

    head, keep = Head.of(model, limit=1), max(keeps)
    with torch.inference_mode():
        out = _forward(model, prefix.rows(len(suffixes)), [list(s) for s in suffixes], pad_id, keep, head=head)
    return [_Scores(hidden=row[keep - k :], head=head) if head is not None else _Scores(logits=row[keep - k :].float())
            for row, k in zip(out, keeps)]


def last_logits(model: Any, prefix: PrefixCache, suffixes: Sequence[Sequence[int]], keep: int, pad_id: int = 0) -> Any:
    """[B, keep, V] scores after each of the last ``keep`` tokens of each suffix (one forward, teacher-forced)."""
    import torch

    with torch.inference_mode():
        return _forward(model, prefix.rows(len(suffixes)), [list(s) for s in suffixes], pad_id, keep).float()

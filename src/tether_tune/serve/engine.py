"""The serving engine: requests that arrive together are decoded together, over their shared prefix.

One worker thread owns the model. Requests are prepared in the caller's thread (rendered with the one renderer,
encoded, checked against the context length, their grammar chosen) and queued; the worker takes what has
arrived within ``batch_wait_s`` of the first (up to ``max_batch``), groups it by prefix (the developer turn: the
system text and the tools' declarations), and decodes each group in one batch with ``decoding.decode_greedy``,
each row under its own grammar (the request's tools, ``tool_choice``, ``parallel_tool_calls``, grounded in what
the user and the tools said). Requests that arrive while a batch decodes form the next one.

Kept per tool set, in bounded LRUs: the prefix KV cache (one forward of the developer turn, the first time) and the
compiled grammars (``constrain.ToolCallConstraint``, which keeps the last grounded grammars it built). llguidance's
view of the tokenizer, which costs seconds on a 262k vocabulary, is built once. A second request with the same
tools therefore pays only its own tokens.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..calibrate import run_biases
from ..decoding import END_CALL_ID, HEAD_LIMIT, START_CALL_ID, Outputs, PrefixCache, Sampling, decode_greedy
from ..errors import TetherTuneError
from ..format import CONTROL_TOKEN_IDS, MAX_NEW_TOKENS, Call, developer_turn_end, render_conversation_segments
from ..predict import read_prediction
from ..tools import check_tools, read_turn, tool_map
from .protocol import APIError, Conversation

_CONTROL_IDS = frozenset(CONTROL_TOKEN_IDS.values())


class _LRU(OrderedDict):
    """An OrderedDict that forgets its least recently used entry beyond ``size``."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.size:
            self.popitem(last=False)
        return value


@dataclass
class Outcome:
    """What one request decoded to, read the way prediction reads it (``predict.read_prediction``)."""

    calls: list[Call]  # schema-valid calls, coerced to their declared types
    text: str  # the words answer ('' when only calls)
    finish_reason: str  # "tool_calls", "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    errors: list[str]  # what was dropped (an invalid call: only possible without the grammar)
    seconds: float


@dataclass
class Job:
    """A prepared request, waiting for (or in) a batch."""

    prefix_key: tuple[str, str]
    prefix_ids: list[int]
    suffix: list[int]
    tools: list[dict[str, Any]]
    ground: str
    constraint: Any
    max_new_tokens: int
    sampling: Sampling | None
    asked: str | None = None  # the last user message (Conversation.asked)
    on_tokens: Callable[[list[int]], None] | None = None
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class QueueFull(APIError):
    def __init__(self, limit: int):
        super().__init__(f"the server has {limit} requests waiting; retry shortly", status=429,
                         code="rate_limit_exceeded", type="rate_limit_error")


class Engine:
    """A loaded run (``rundir.LoadedRun``) served to many callers. :meth:`prepare` then :meth:`submit`, from any
    thread; :meth:`close` stops the worker."""

    def __init__(self, run: Any, constrained: bool = True, grounded: bool = True, speculate: int = 8,
                 max_batch: int = 8, batch_wait_s: float = 0.005, max_queue: int = 64, cache_size: int = 8,
                 call_bias: float | None = None, next_call_bias: float | None = None,
                 on_batch: Callable[[int], None] | None = None, head_limit: int = HEAD_LIMIT,
                 enum_bias: float | None = None, tool_bias: float | None = None):
        from ..tokenizer import stop_token_ids

        self.model, self.tokenizer = run.model, run.tokenizer
        self.tools, self.developer = list(run.tools), run.developer
        self.biases = run_biases(run.info, call_bias, next_call_bias, enum_bias, tool_bias)
        self.constrained, self.grounded, self.speculate = constrained, grounded, speculate
        self.head_limit = head_limit
        self.outputs = Outputs()  # earlier answers to draft from (all tool sets: drafts are verified)
        self.max_batch, self.batch_wait_s, self.max_queue = max_batch, batch_wait_s, max_queue
        self.on_batch = on_batch
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.context_limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self._tok_lock = threading.Lock()  # the Rust tokenizer is not to be used from two threads at once
        self._lock = threading.Lock()
        self._prefix_ids = _LRU(cache_size)  # prefix key -> ids
        self._prefixes = _LRU(cache_size)  # prefix key -> PrefixCache (worker thread only)
        self._constraints = _LRU(cache_size * 4)  # (tools key, choice, parallel) -> ToolCallConstraint
        self._checked_tools = _LRU(cache_size * 4)  # tools key -> checked tools
        # llguidance's view of the tokenizer (seconds on a 262k vocabulary): once, shared by every grammar.
        self._lltokenizer = None
        if constrained:
            from ..constrain import llguidance_tokenizer

            self._lltokenizer = llguidance_tokenizer(self.tokenizer)
        self._pending = 0
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._loop, name="tether-tune-decode", daemon=True)
        self._worker.start()

    # ---------------------------------------------------------------------------------------------------------
    # Preparing a request (caller's thread)
    # ---------------------------------------------------------------------------------------------------------

    def _tools(self, tools: list[dict[str, Any]] | None) -> tuple[str, list[dict[str, Any]]]:
        tools = tools if tools else self.tools
        key = json.dumps(tools, sort_keys=True, ensure_ascii=False)

        def check() -> list[dict[str, Any]]:
            try:
                return check_tools(tools, "tools")
            except TetherTuneError as err:
                raise APIError(f"tools: {err}", param="tools", code="invalid_tools") from None

        with self._lock:
            return key, self._checked_tools.get_or_make(key, check)

    def _constraint(self, tools_key: str, tools: list[dict[str, Any]], choice: str, parallel: bool) -> Any:
        if not self.constrained:
            return None
        from ..constrain import ToolCallConstraint

        with self._lock:

            def make() -> Any:
                try:
                    return ToolCallConstraint(self.tokenizer, tools, grounded=self.grounded, tool_choice=choice,
                                              parallel=parallel, lltokenizer=self._lltokenizer)
                except ValueError as err:
                    raise APIError(f"tools: {err}", param="tools", code="invalid_tools") from None

            return self._constraints.get_or_make((tools_key, choice, parallel), make)

    def prepare(self, conv: Conversation, tool_choice: str = "auto", parallel: bool = True,
                max_new_tokens: int = MAX_NEW_TOKENS, sampling: Sampling | None = None) -> Job:
        """Render, encode and check one request; raises :class:`APIError` (a 400) for what the caller can fix."""
        from ..tokenizer import encode_segments

        tools_key, tools = self._tools(conv.tools)
        names = list(tool_map(tools))
        if tool_choice not in ("auto", "none", "required") and tool_choice not in names:
            raise APIError(f"tool_choice names {tool_choice!r}, which is not among the tools ({', '.join(names)})",
                           param="tool_choice")
        constraint = self._constraint(tools_key, tools, tool_choice, parallel)
        try:
            segments = render_conversation_segments(conv.render_messages(self.developer), tools,
                                                    add_generation_prompt=True)
        except TetherTuneError as err:
            raise APIError(f"messages: {err}", param="messages") from None
        end = developer_turn_end(segments)
        developer = conv.developer if conv.developer is not None else (self.developer or "")
        prefix_key = (tools_key, developer)
        with self._tok_lock:  # _prefix_ids is only used here, under this lock
            prefix_ids = self._prefix_ids.get_or_make(prefix_key,
                                                      lambda: encode_segments(self.tokenizer, segments[:end]))
            suffix = encode_segments(self.tokenizer, segments[end:])
        prompt = len(prefix_ids) + len(suffix)
        if self.context_limit and prompt + max_new_tokens > self.context_limit:
            raise APIError(
                f"the prompt is {prompt} tokens and max_tokens {max_new_tokens}: together more than the model's "
                f"{self.context_limit}-token context. Shorten the conversation or lower max_tokens (nothing is cut).",
                param="messages", code="context_length_exceeded")
        return Job(prefix_key, prefix_ids, suffix, tools, conv.ground, constraint, max_new_tokens, sampling,
                   asked=conv.asked)

    def submit(self, job: Job) -> Future:
        """Queue a prepared job; its future gets an :class:`Outcome` (or the exception). 429 when full."""
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull(self.max_queue)
            self._pending += 1
        job.future.add_done_callback(self._release)  # answered, failed or cancelled: no longer pending
        self._queue.put(job)
        return job.future

    def _release(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    # ---------------------------------------------------------------------------------------------------------
    # The worker
    # ---------------------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, deadline, stop = [first], time.perf_counter() + self.batch_wait_s, False
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            groups: dict[tuple[str, str], list[Job]] = {}
            for job in batch:
                groups.setdefault(job.prefix_key, []).append(job)
            for jobs in groups.values():
                self._run([j for j in jobs if j.future.set_running_or_notify_cancel()])  # drop cancelled ones
            if stop:
                return

    def decode_ids(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (control tokens written out), under the tokenizer's lock."""
        from ..tokenizer import decode

        with self._tok_lock:
            return decode(self.tokenizer, ids)

    def _run(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            t0 = time.perf_counter()
            prefix = self._prefixes.get_or_make(jobs[0].prefix_key,
                                                lambda: PrefixCache.build(self.model, jobs[0].prefix_ids))
            if self.on_batch is not None:
                self.on_batch(len(jobs))

            def on_tokens(row: int, tokens: list[int]) -> None:
                callback = jobs[row].on_tokens
                if callback is not None:
                    callback(tokens)

            decoded = decode_greedy(
                self.model, prefix, [j.suffix for j in jobs], self.stop_ids, [j.max_new_tokens for j in jobs],
                [j.constraint for j in jobs], self.pad_id, self.speculate,
                [[t for t in j.suffix if t not in _CONTROL_IDS] for j in jobs], [j.ground for j in jobs],
                self.biases, [j.sampling for j in jobs], on_tokens, self.head_limit, self.outputs, self.decode_ids,
                [j.asked for j in jobs])
            seconds = time.perf_counter() - t0
            for job, d in zip(jobs, decoded):
                raw = self.decode_ids(d.ids)
                job.future.set_result(self.outcome(raw, d.ids, job, seconds))
        except BaseException as err:  # the server stays up; each caller gets the error
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)

    def outcome(self, raw: str, ids: Sequence[int], job: Job, seconds: float) -> Outcome:
        calls, text, errors = read_prediction(raw, job.tools)  # what predict reads, the same way
        ended = bool(ids) and ids[-1] in self.stop_ids
        finish = "tool_calls" if calls else "stop" if ended else "length"
        return Outcome(calls, text, finish, len(job.prefix_ids) + len(job.suffix), len(ids), errors, seconds)


# --------------------------------------------------------------------------------------------------------------
# Streaming: tokens in, OpenAI deltas out
# --------------------------------------------------------------------------------------------------------------


def tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def tool_call_json(call: Call, index: int) -> dict[str, Any]:
    """One call in OpenAI's shape, with a fresh id: arguments a JSON string whose values keep their schema types."""
    return {"index": index, "id": tool_call_id(), "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}


class DeltaReader:
    """Turns a row's tokens, as they come, into what may be sent: words as soon as they are stable, each call
    once its ``<end_function_call>`` has come (name and complete arguments in one delta; arguments are only
    known to be valid and typed when the call is complete)."""

    def __init__(self, engine: Engine, tools: Sequence[Mapping[str, Any]]):
        self.engine, self.tools = engine, tools
        self.ids: list[int] = []
        self.sent_text = ""
        self.sent_calls = 0
        self.calls_mode: bool | None = None

    def feed(self, tokens: Sequence[int]) -> list[tuple[str, Any]]:
        """``("text", str)`` and ``("call", (index, Call))`` events for the new tokens."""
        self.ids += tokens
        if self.calls_mode is None and self.ids:
            self.calls_mode = self.ids[0] == START_CALL_ID
        events: list[tuple[str, Any]] = []
        if self.calls_mode:
            complete = sum(1 for t in self.ids if t == END_CALL_ID)
            if complete > self.sent_calls:
                cut = max(i for i, t in enumerate(self.ids) if t == END_CALL_ID) + 1
                raw = self.engine.decode_ids(self.ids[:cut])
                calls = read_turn(raw, self.tools).valid_calls
                events += [("call", (i, c)) for i, c in enumerate(calls) if i >= self.sent_calls]
                self.sent_calls = max(self.sent_calls, len(calls), complete)
            return events
        words = [t for t in self.ids if t not in self.engine.stop_ids]
        text = self.engine.decode_ids(words).lstrip()
        stable = text.rstrip().rstrip("\ufffd")  # trailing blanks and a half-decoded character wait
        if len(stable) > len(self.sent_text) and stable.startswith(self.sent_text):
            events.append(("text", stable[len(self.sent_text):]))
            self.sent_text = stable
        return events

    def rest(self, outcome: Outcome) -> list[tuple[str, Any]]:
        """What the final outcome holds beyond what was sent."""
        events: list[tuple[str, Any]] = []
        if outcome.text.startswith(self.sent_text) and len(outcome.text) > len(self.sent_text):
            events.append(("text", outcome.text[len(self.sent_text):]))
        events += [("call", (i, c)) for i, c in enumerate(outcome.calls) if i >= self.sent_calls]
        return events

"""Prediction: a request in, tool calls out, in well under a second on a laptop CPU.

Every prompt starts with the same developer turn (the trigger sentence and the 8 declarations, about 660
tokens on the real model): :class:`Predictor` encodes it once, runs it through the model once, and keeps its
KV cache. A request then costs only its own suffix (``<start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>
model\\n``, a few dozen tokens) plus greedy decoding. With ``constrained=True`` the tool schema drives decoding
(``tether_tune.constrain``): only valid calls or a text answer can come out, and tokens the grammar forces are
appended without asking the model for a choice. With ``grounded=True`` (the default with ``constrained``) the
grammar is built per request, so ids, names and free text can only be what the request says.

The engine (the cache, its masks, the greedy loop) is ``tether_tune.decoding``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .calibrate import CALL_BIAS_HELP, ENUM_BIAS_HELP, NEXT_CALL_BIAS_HELP, TOOL_BIAS_HELP, run_biases
from .config import ConfigError, print_config
from .decoding import (  # noqa: F401  (part of this module's API)
    HEAD_LIMIT,
    HEAD_LIMIT_HELP,
    Biases,
    Outputs,
    PrefixCache,
    decode_greedy,
    lookup_draft,
)
from .errors import DataError
from .format import CONTROL_TOKEN_IDS, MAX_NEW_TOKENS, Call, prefix_segments
from .modeling import DTYPE_HELP, check_dtype, check_model_arg
from .tools import TOOLS_HELP, read_turn

# --------------------------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    calls: list[Call]  # parsed (format.parse_output), coerced (tools.coerce_call)
    text: str  # words answer ('' when it called tools)
    raw: str  # decoded model turn, control tokens kept
    errors: list[str]  # parse / validation errors
    timings: dict[str, float]  # "total_s", "prefill_s", "decode_s", "new_tokens" (+ "forced_tokens", ...)

    def to_dict(self, show_raw: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "calls": [c.to_dict() for c in self.calls],
            "text": self.text,
            "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in self.timings.items()},
        }
        if self.errors:
            d["errors"] = self.errors
        if show_raw:
            d["raw"] = self.raw
        return d


def read_prediction(raw: str, tools: Sequence[Mapping[str, Any]]) -> tuple[list[Call], str, list[str]]:
    """A decoded model turn read the one way (``tools.read_turn``: parse -> coerce -> validate) as
    ``(valid calls, words answer, errors)``. Invalid calls are left out of the calls and reported in the
    errors: nothing invalid goes downstream."""
    turn = read_turn(raw, tools)
    return turn.valid_calls, ("" if turn.calls else turn.text), turn.errors


# --------------------------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[tether-tune] {msg}", file=sys.stderr, flush=True)


class Predictor:
    """A model loaded once, its developer turn encoded and cached once; ``predict`` per request."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        tools: Sequence[Mapping[str, Any]],
        developer: str | None = None,
        constrained: bool = True,
        max_new_tokens: int = MAX_NEW_TOKENS,
        base_model: str = "",
        speculate: int = 8,
        grounded: bool = True,
        biases: Biases = Biases(),
        head_limit: int = HEAD_LIMIT,
    ):
        from .tokenizer import encode_segments, stop_token_ids

        self.head_limit = head_limit
        self.outputs = Outputs()  # earlier answers, drafted from (with speculate)
        self.biases = biases  # the calibrated decisions (decoding.Biases; calibrate.run_biases for a run)
        self.model = model
        self.tokenizer = tokenizer
        self.tools = list(tools)
        self.developer = developer
        self.max_new_tokens = max_new_tokens
        self.base_model = base_model
        self.speculate = speculate
        self.stop_ids = stop_token_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.prefix = PrefixCache.build(model, encode_segments(tokenizer, prefix_segments(self.tools, developer)))
        self.constraint = None
        if constrained:
            from .constrain import ToolCallConstraint

            self.constraint = ToolCallConstraint(tokenizer, self.tools, grounded=grounded)

    @property
    def constrained(self) -> bool:
        return self.constraint is not None

    @classmethod
    def load(
        cls,
        model: str | os.PathLike,
        tools: str | os.PathLike | Sequence[Mapping[str, Any]] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        constrained: bool = True,
        max_new_tokens: int = MAX_NEW_TOKENS,
        speculate: int = 8,
        grounded: bool = True,
        call_bias: float | None = None,
        next_call_bias: float | None = None,
        head_limit: int = HEAD_LIMIT,
        enum_bias: float | None = None,
        tool_bias: float | None = None,
    ) -> "Predictor":
        """``model``: a training output directory (its base model with the LoRA merged in, its tokenizer, tools and
        developer text: ``rundir.load_run``), a model directory, a hub name, a ``.gguf`` or the offline preset.
        ``tools``: a list or a tools file; default the run's tools, else CodeTether's.
        ``speculate``: draft tokens copied from the request per forward (0: off); the output does not change.
        ``grounded`` (with ``constrained``): ids, names and free text only from the request.
        ``call_bias``: added to the call token's first score (``calibrate.py``); ``None``: the run's calibrated
        value (0 for a plain model). ``next_call_bias``: the same after each call (another call or the end);
        ``None`` also applies the run's ``open_bias`` where it has one (given, it applies after every call).
        ``head_limit``: the output head only for the allowed tokens when at most this many (0: always whole).
        ``enum_bias`` (constrained): taken from tokens that pass by an enum argument the request states
        (``decoding.decode_greedy``); ``tool_bias`` (constrained): from tokens of a tool's name that lead away from
        the tools the request asks for; ``None``: the run's calibrated value (0 for a plain model)."""
        from .rundir import load_run

        return cls.from_run(load_run(model, tools=tools, dtype=dtype, device=device), constrained, max_new_tokens,
                            speculate, grounded, call_bias, next_call_bias, head_limit, enum_bias, tool_bias)

    @classmethod
    def from_run(cls, run: Any, constrained: bool = True, max_new_tokens: int = MAX_NEW_TOKENS, speculate: int = 8,
                 grounded: bool = True, call_bias: float | None = None,
                 next_call_bias: float | None = None, head_limit: int = HEAD_LIMIT,
                 enum_bias: float | None = None, tool_bias: float | None = None) -> "Predictor":
        """A predictor over an already loaded ``rundir.LoadedRun`` (several decodings share one loaded model).
        ``call_bias``, ``next_call_bias``, ``enum_bias``, ``tool_bias`` ``None``: the run's calibrated biases
        (``open_bias`` included)."""
        return cls(run.model, run.tokenizer, run.tools, run.developer, constrained, max_new_tokens, run.base_model,
                   speculate, grounded, run_biases(run.info, call_bias, next_call_bias, enum_bias, tool_bias),
                   head_limit)

    def encode(self, request: str) -> list[int]:
        """The full prompt's ids for ``request`` (what the uncached path would feed the model)."""
        from .tokenizer import encode_prompt

        ids = encode_prompt(self.tokenizer, request, self.tools, self.developer)
        n = len(self.prefix.ids)
        if ids[:n] != self.prefix.ids:
            # Cannot happen while the developer turn ends with a control token followed by "\n" and the user
            # turn starts with one: text runs are encoded between control tokens. Refuse rather than be wrong.
            raise RuntimeError(
                "the prompt does not start with the cached developer-turn tokens; the prefix cache would be "
                f"wrong for request {request[:60]!r}"
            )
        return ids

    def suffix(self, request: str) -> list[int]:
        """The prompt's ids after the cached developer turn: what decoding feeds the model for ``request``."""
        return self.encode(request)[len(self.prefix.ids) :]

    def predict(self, request: str) -> Prediction:
        return self.predict_batch([request], batch_size=1)[0]

    def predict_batch(self, requests: Sequence[str], batch_size: int = 8) -> list[Prediction]:
        """Requests in batches over the one prefix cache; requests of similar length share a batch."""
        from .tokenizer import decode

        suffixes = [self.suffix(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(suffixes[i]))
        controls = set(CONTROL_TOKEN_IDS.values())
        results: list[Prediction | None] = [None] * len(requests)
        for start in range(0, len(order), max(1, batch_size)):
            idx = order[start : start + batch_size]
            t0 = time.perf_counter()
            decoded = decode_greedy(
                self.model,
                self.prefix,
                [suffixes[i] for i in idx],
                self.stop_ids,
                self.max_new_tokens,
                self.constraint,
                self.pad_id,
                self.speculate,
                [[t for t in suffixes[i] if t not in controls] for i in idx],  # the request's own tokens
                [requests[i] for i in idx],  # what a grounded grammar is built from
                self.biases,
                head_limit=self.head_limit,
                outputs=self.outputs,
                decode=lambda ids: decode(self.tokenizer, ids),
            )
            for i, d in zip(idx, decoded):
                raw = decode(self.tokenizer, d.ids)
                calls, text, errors = read_prediction(raw, self.tools)
                if d.ids and d.ids[-1] not in self.stop_ids:
                    errors.append(f"stopped at max_new_tokens={self.max_new_tokens} before a stop token")
                timings = {"total_s": time.perf_counter() - t0, **d.stats, "batch_size": float(len(idx))}
                results[i] = Prediction(calls, text, raw, errors, timings)
        return [r for r in results if r is not None]


# --------------------------------------------------------------------------------------------------------------
# CLI: tether-tune predict
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ModelOptions:
    """The model and decoding flags of every command that predicts (``predict``, ``run``): one definition, one
    check, one way to load the predictor they describe."""

    model_path: str = field(
        default="./finetuned_model", metadata={"help": "training output dir (adapter), model dir, .gguf or preset"}
    )
    tools: str | None = field(default=None, metadata={"help": TOOLS_HELP + " (or those of the run in --model_path)"})
    constrained: bool = field(default=True, metadata={"help": "decode under the tool schema: never an invalid call"})
    grounded: bool = field(default=True, metadata={
        "help": "with --constrained: ids, agent names and free text can only be spans of the request, and a call "
                "whose required id the request lacks cannot be made (--no-grounded: the schema alone)"})
    call_bias: float | None = field(default=None, metadata={"help": CALL_BIAS_HELP})
    next_call_bias: float | None = field(default=None, metadata={"help": NEXT_CALL_BIAS_HELP})
    enum_bias: float | None = field(default=None, metadata={"help": ENUM_BIAS_HELP})
    tool_bias: float | None = field(default=None, metadata={"help": TOOL_BIAS_HELP})
    max_new_tokens: int = field(default=MAX_NEW_TOKENS, metadata={"help": "stop after this many new tokens"})
    speculate: int = field(
        default=8, metadata={"help": "draft tokens copied from the request, verified per forward (0: off; same output)"}
    )
    head_limit: int = field(default=HEAD_LIMIT, metadata={"help": HEAD_LIMIT_HELP})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, ..."})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})

    def validate_model(self, check_model: bool = True) -> None:
        """The flags' own checks; ``check_model`` False: the model is not used (no model argument to check)."""
        if check_model:
            check_model_arg("--model_path", self.model_path)
            check_dtype(self.dtype)
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max_new_tokens {self.max_new_tokens}: must be at least 1")
        if self.speculate < 0:
            raise ConfigError(f"--speculate {self.speculate}: must be 0 (off) or more")
        if self.head_limit < 0:
            raise ConfigError(f"--head_limit {self.head_limit}: must be 0 (off) or more")

    def load_predictor(self) -> "Predictor":
        return Predictor.load(self.model_path, self.tools, self.device, self.dtype, self.constrained,
                              self.max_new_tokens, self.speculate, self.grounded, self.call_bias, self.next_call_bias,
                              self.head_limit, self.enum_bias, self.tool_bias)


@dataclass
class PredictConfig(ModelOptions):
    """Turn requests into CodeTether tool calls; prints one JSON object per request."""

    request: list[str] = field(
        default_factory=list, metadata={"help": "the request(s) to answer", "positional": True}
    )
    input_file: str | None = field(
        default=None,
        metadata={"help": 'JSONL of requests: a string, or an object with "request", "input" or "query" a line'},
    )
    batch_size: int = field(default=8, metadata={"help": "requests decoded together over the prefix cache"})
    show_raw: bool = field(default=False, metadata={"help": "also print the raw model turn (control tokens kept)"})

    def validate(self) -> None:
        if not self.request and not self.input_file:
            raise ConfigError("REQUEST: give at least one request, or --input_file")
        if self.input_file and not Path(self.input_file).is_file():
            raise ConfigError(f"--input_file {self.input_file}: no such file")
        self.validate_model()
        if self.batch_size < 1:
            raise ConfigError(f"--batch_size {self.batch_size}: must be at least 1")


def read_requests(path: str | os.PathLike) -> list[tuple[Any, str]]:
    """``(id, request)`` per non-empty line of a JSONL file: a JSON string, or an object with ``request``,
    ``input`` or ``query`` (and an optional ``id``). A bad line raises :class:`DataError` with its file:line."""
    from .data import json_record, jsonl_lines

    out: list[tuple[Any, str]] = []
    for source, line in jsonl_lines(path, "requests file (--input_file)"):
        rec = json_record(line, source)
        if isinstance(rec, str) and rec.strip():
            out.append((None, rec))
            continue
        key = next((k for k in ("request", "input", "query") if isinstance(rec, dict) and k in rec), None)
        text = rec[key] if key else None
        if not isinstance(text, str) or not text.strip():
            raise DataError(source, key, 'expected a non-empty string, or an object with "request", "input" or '
                                         '"query" text')
        out.append((rec.get("id"), text))
    return out


def run_predict(cfg: PredictConfig) -> int:
    cfg.validate()
    print_config(cfg)
    items: list[tuple[Any, str]] = [(None, r) for r in cfg.request]
    if cfg.input_file:
        items += read_requests(cfg.input_file)
    t0 = time.perf_counter()
    predictor = cfg.load_predictor()
    _log(f"loaded {cfg.model_path} in {time.perf_counter() - t0:.1f} s (prefix: {len(predictor.prefix.ids)} tokens)")
    predictions = predictor.predict_batch([r for _, r in items], batch_size=cfg.batch_size)
    for (rid, _), pred in zip(items, predictions):
        d = pred.to_dict(show_raw=cfg.show_raw)
        if rid is not None:
            d = {"id": rid, **d}
        print(json.dumps(d, ensure_ascii=False), flush=True)
    return 0

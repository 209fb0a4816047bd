"""Calibrating the decision between a call and words, on validation data.

A fine-tuned model's first answer token decides: ``<start_function_call>`` (a call) or anything else (words).
That choice is where a model trained mostly on calls over-calls. The *margin* of a request is the score of
``<start_function_call>`` minus the best other score the grammar allows at that position (one forward, no
decoding); greedy calls a tool when the margin is above 0. Calibration picks the bias added to the call score
(``decoding.Biases.call``) that makes the most validation decisions right — calls on requests
whose gold answer is a call, words on the others — in the middle of the best run of biases that make the same
decisions (``choose_call_bias``: as far from every request's crossing as it can be), among the biases
whose words answers are at least 90% right (``MIN_WORDS_PRECISION``, the goal's no-call precision): right
decisions are never bought with words where a call was due.

The same decision comes again after each call: right after ``<end_function_call>`` the model chooses between
another ``<start_function_call>`` and ``<start_function_response>`` (the end of the calls; the grammar allows
nothing else). A model trained on mostly single calls stops after the first one. Its margin there is the call
score minus the end score, with the gold calls teacher-forced (one forward per request); ``next_call_bias``
(``Biases.next_call``) is chosen by the same rule on every call of the validation answers:
another call where the gold answer has one, the end where it has not. That decision is split in two where the
validation data has enough of both (``choose_next_call_biases``): while the request still asks for something no
call has answered (``constrain.left_open``: an id no call has used, "cancel A and B" after cancelling A; or a tool
asked for in more clauses than it has calls, "cancel A and tell the build-bot" after cancelling A), and otherwise;
each side gets its own bias (``open_bias``, ``next_call_bias``).

Two choices inside a call are weighed the same way (``passing_margins``; ``gold_margins`` measures these and the
decisions after a call in one teacher-forced pass): an
optional enum argument the request states and the call has not set (``enum_bias``), and a tool's name while the
request asks for a tool no call has answered (``tool_bias``: "give me the gist of session …" gets
``playback_session``, not ``get_session_history``). At each such point of the gold answers, the best token that keeps
to it against the best that passes it by; the bias by the middle rule.

``tether-tune train`` calibrates on its validation file at the end and stores the bias in ``run_info.json``
(``call_bias``); prediction and evaluation apply it unless ``--call_bias`` says otherwise.
``tether-tune calibrate --model_path RUN --val_file FILE`` does it again for an existing run. Every bias is
stored (``call_bias``, ``next_call_bias``, ``open_bias``, ``enum_bias``, ``tool_bias``) and applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from .config import ConfigError, print_config, say
from .constrain import left_open, unsaid_enum
from .data import Example, read_examples
from .decoding import (END_CALL_ID, START_CALL_ID, START_RESPONSE_ID, Biases, first_token_logits,
                       teacher_forced_scores)

#: ``--call_bias`` and ``--next_call_bias`` of ``tether-tune predict`` and ``evaluate``.
CALL_BIAS_HELP = ("added to the call token's score at the first answer token, the calibrated choice between a call "
                  "and words (tether-tune calibrate); default: the run's calibrated values (one where the request "
                  "asks for something by an id or a tool's words, one otherwise), 0 for a plain model; given, it "
                  "applies to every request; 0 turns calibration off")
NEXT_CALL_BIAS_HELP = ("added to the call token's score right after each call: the calibrated choice between another "
                       "call and the end of the calls; default: the run's calibrated values (one while the request "
                       "asks for something no call has answered, one otherwise), 0 for a plain model; given, it "
                       "applies after every call")

ENUM_BIAS_HELP = ("taken from the score of each token that would pass by an optional enum argument the request states "
                  "(\"show me the failed tasks\": list_tasks without its status), with --constrained; default: the "
                  "run's calibrated value (run_info.json), 0 for a plain model; 0 turns it off")


TOOL_BIAS_HELP = ("taken from the score of each token of a tool's name that leads away from the tools the request asks "
                  "for and no call has answered (tools.TOOL_CUES: \"give me the gist of session …\" gets "
                  "playback_session), with --constrained; default: the run's calibrated value (run_info.json), 0 for "
                  "a plain model; 0 turns it off")


def run_biases(info: Any, call_bias: float | None = None, next_call_bias: float | None = None,
               enum_bias: float | None = None, tool_bias: float | None = None) -> Biases:
    """The biases for decoding a run: the ones given, else the run's calibrated ones (``info``: its
    ``rundir.RunInfo``, or None for a plain model: 0). A given ``next_call_bias`` applies after every call, so the
    run's ``open_bias`` is then not used; a given ``call_bias`` applies to every request (no ``call_open``)."""
    def given(value: float | None, name: str) -> float:
        return value if value is not None else (getattr(info, name) if info is not None else None) or 0.0

    call, enum, tool = given(call_bias, "call_bias"), given(enum_bias, "enum_bias"), given(tool_bias, "tool_bias")
    call_open = info.call_open_bias if info is not None and call_bias is None else None
    if next_call_bias is not None or info is None:
        return Biases(call, next_call_bias or 0.0, None, enum, tool, call_open)
    return Biases(call, info.next_call_bias or 0.0, info.open_bias, enum, tool, call_open)


def call_margins(predictor: Any, requests: Sequence[str], batch_size: int = 8) -> list[float | None]:
    """Per request: the call score minus the best other allowed score at the first answer token, under the
    predictor's grammar; ``None`` when the grammar allows no call there (grounded: a required id is missing)."""
    import torch

    out: list[float | None] = []
    for start in range(0, len(requests), batch_size):
        chunk = list(requests[start : start + batch_size])
        suffixes = [predictor.suffix(r) for r in chunk]
        logits = first_token_logits(predictor.model, predictor.prefix, suffixes, predictor.pad_id).cpu()
        if predictor.constraint is not None:
            allowed = predictor.constraint.allowed([predictor.constraint.matcher(r) for r in chunk], logits.shape[-1])
        else:
            allowed = torch.ones_like(logits, dtype=torch.bool)
        for row, ok in zip(logits, allowed):
            if not ok[START_CALL_ID]:
                out.append(None)
                continue
            others = row.masked_fill(~ok, float("-inf"))
            others[START_CALL_ID] = float("-inf")
            best = float(others.max())
            out.append(float(row[START_CALL_ID]) - best if best > float("-inf") else float("inf"))
    return out


def _teacher_forced(predictor: Any, examples: Sequence[Example],
                    batch_size: int = 8) -> Iterator[tuple[Any, list[int], str]]:
    """The gold answer of each example that has calls, teacher-forced, ``batch_size`` at a time: per example its
    scores (``scores.rows(i, ids)``: those of the tokens ``ids`` after ``completion[i]``, computed on demand), its
    completion (the model turn's tokens) and its request."""
    from dataclasses import replace

    from .encode import IGNORE_INDEX, encode_example

    items: list[tuple[list[int], list[int], str]] = []  # (suffix, completion, request)
    n = len(predictor.prefix.ids)
    for ex in examples:
        if not ex.calls:
            continue
        enc = encode_example(predictor.tokenizer, replace(ex, developer=predictor.developer), predictor.tools)
        if enc.input_ids[:n] != predictor.prefix.ids:
            raise ValueError(f"{ex.source or ex.id}: its prompt does not start with the predictor's developer turn")
        completion = [t for t, y in zip(enc.input_ids, enc.labels) if y != IGNORE_INDEX]
        items.append((enc.input_ids[n:], completion, ex.request))
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        rows = teacher_forced_scores(predictor.model, predictor.prefix, [s for s, _, _ in chunk],
                                     [len(c) for _, c, _ in chunk], predictor.pad_id)
        for row, (_, completion, request) in zip(rows, chunk):
            yield row, completion, request


def gold_margins(predictor: Any, examples: Sequence[Example], kinds: Sequence[str] = ("next_call", "enum", "tool"),
                 batch_size: int = 8) -> dict[str, tuple[list[float], ...]]:
    """The decisions inside each gold answer that has calls (teacher-forced under the predictor's grammar, one
    forward per example for every kind), per kind:

    - ``next_call``: after each call, the call score minus the end score (``<start_function_response>``), whether
      the gold answer has another call there, and whether the request still asks for something no call so far has
      answered (``constrain.left_open``: decoding's ``open_bias``);
    - ``enum``, ``tool``: at each point where that weighed choice comes up (``decoding.passing_test``: an optional
      enum argument the request states and the call has not set; a tool's name while the request asks for a tool no
      call has answered), the best score of an allowed token that keeps to it minus the best of one that passes it
      by, and whether the gold answer keeps to it (``decoding``'s ``enum_bias`` and ``tool_bias`` weigh those
      decisions). Only where the grammar allows both; an answer the grammar rejects is left at that point (without
      a grammar there are none)."""
    import torch

    from .decoding import WEIGHED, passing, passing_test
    from .tokenizer import decode

    out: dict[str, tuple[list[Any], ...]] = {kind: ([], [], []) if kind == "next_call" else ([], []) for kind in kinds}
    weighed = [k for k in kinds if k != "next_call"]
    constraint = predictor.constraint if weighed else None
    texts: dict[int, str] = {}
    for scores, completion, request in _teacher_forced(predictor, examples, batch_size):
        if "next_call" in out:
            margins, more, open_ = out["next_call"]
            for i, token in enumerate(completion[:-1]):
                if token == END_CALL_ID:
                    call, end = scores.rows(i, torch.tensor([START_CALL_ID, START_RESPONSE_ID])).tolist()
                    margins.append(call - end)
                    more.append(completion[i + 1] == START_CALL_ID)
                    open_.append(left_open(request, decode(predictor.tokenizer, completion[: i + 1])))
        if constraint is None:
            continue
        matcher = constraint.matcher(request)
        for i, token in enumerate(completion):
            said = decode(predictor.tokenizer, completion[:i]) if i else None
            allowed = None  # the grammar's mask here, once for every kind that needs it
            for kind in weighed:
                test = passing_test(kind, constraint.tools, request, said) if said is not None else None
                if test is None:
                    continue
                if allowed is None:
                    allowed = constraint.allowed([matcher], scores.vocab_size)[0]
                ids, skip = passing(allowed, test, texts, lambda t: decode(predictor.tokenizer, t), WEIGHED[kind])
                stay = [t for t in ids if t not in skip]
                if skip and stay:
                    at = scores.rows(i - 1, torch.tensor(stay + skip))
                    out[kind][0].append(float(at[: len(stay)].max() - at[len(stay) :].max()))
                    out[kind][1].append(token not in skip)
            if not matcher.consume_token(token):
                break  # the gold answer leaves the grammar here (an argument the request does not state)
    return out


def next_call_margins(predictor: Any, examples: Sequence[Example],
                      batch_size: int = 8) -> tuple[list[float], list[bool], list[bool]]:
    """:func:`gold_margins`' ``next_call`` decisions: margins, another call due, something left open."""
    return gold_margins(predictor, examples, ("next_call",), batch_size)["next_call"]  # type: ignore[return-value]


#: The goal's floor on no-call precision: of the requests the model answers in words, at least this share must be
#: requests no tool serves. Calibration never trades it away for more right decisions.
MIN_WORDS_PRECISION = 0.9


def choose_call_bias(margins: Sequence[float | None], is_call: Sequence[bool], limit: float = 10.0,
                     min_words_precision: float | None = None, rule: str = "middle") -> tuple[float, dict[str, Any]]:
    """The bias b (|b| <= ``limit``) that makes the most decisions right (call iff margin + b > 0); with the
    decision counts before and after. Biases between two neighbouring margins make the same decisions: of the best
    such runs, the one nearest 0 is taken, and ``rule`` says where in it — ``middle`` (the default: as far from a
    decision's crossing as it can be; the run past the last crossing ends at ``limit``) or ``nearest`` (just past
    the crossing nearest 0, the smallest move). Chosen on the development set, out of sample (calibrated on the
    validation split alone): ``middle`` 74.5% exact vs 74.0% for ``make main``'s model, 74.5% vs 73.5% for another
    (docs/history.md). It matters most after a call while an id is still unused: every such decision in the
    validation data is "another call", so ``nearest`` stops just past the last one (+1.3) and ``middle`` goes
    halfway to the limit (+5.7).

    With ``min_words_precision``, only biases whose words answers are at least that share right count (requests
    where no call is possible, margin ``None``, are words answers at every bias); where no bias reaches it, the
    one with the highest such precision."""
    pairs = [(m, c) for m, c in zip(margins, is_call) if m is not None]
    forced = [c for m, c in zip(margins, is_call) if m is None]  # words at every bias

    def right(b: float) -> int:
        return sum((m + b > 0) == c for m, c in pairs)

    def words_precision(b: float) -> float | None:
        words = [c for m, c in pairs if not m + b > 0] + forced
        return sum(not c for c in words) / len(words) if words else None

    # Decisions change only where -margin crosses b.
    if rule == "middle":
        # The middle of each run of biases that make the same decisions: between two neighbouring crossings (or a
        # crossing and the limit), as far from both as it can be.
        edges = sorted({-limit, limit, *(-m for m, _ in pairs if abs(m) < limit)})
        candidates = {round((lo + hi) / 2, 4) for lo, hi in zip(edges, edges[1:])}
    elif rule == "nearest":
        # 0 and a point just past each crossing.
        candidates = {0.0}
        for m, _ in pairs:
            for b in (-m + 1e-3, -m - 1e-3):
                if abs(b) <= limit:
                    candidates.add(round(b, 4))
    else:
        raise ValueError(f"bias rule {rule!r}: expected nearest or middle")
    ordered = sorted(candidates, key=abs)  # max() keeps the first (closest to 0) of equals
    if min_words_precision is None:
        best = max(ordered, key=right)
    else:
        precision = {b: 1.0 if (q := words_precision(b)) is None else q for b in ordered}  # none given: 1
        feasible = [b for b in ordered if precision[b] >= min_words_precision]
        best = max(feasible, key=right) if feasible else max(ordered, key=lambda b: (precision[b], right(b)))

    def counts(b: float) -> dict[str, Any]:
        return _call_counts(margins, is_call, [b] * len(margins))

    n_call = sum(c for _, c in pairs)
    stats = {"examples": len(pairs), "call_requests": n_call, "words_requests": len(pairs) - n_call,
             "no_call_possible": len(margins) - len(pairs), "min_words_precision": min_words_precision,
             "before": counts(0.0), "after": counts(best)}
    return best, stats


def _call_counts(margins: Sequence[float | None], is_call: Sequence[bool], biases: Sequence[float]) -> dict[str, Any]:
    """The call-or-words decisions at one bias per request (call iff margin + bias > 0): how many are right, of
    each kind, among the requests where a call is possible, and the share of words answers that are right (where no
    call is possible, margin ``None``, the answer is words at every bias)."""
    rows = [(m + b > 0, c) for m, c, b in zip(margins, is_call, biases) if m is not None]
    words = [c for d, c in rows if not d] + [c for m, c in zip(margins, is_call) if m is None]
    return {"right": sum(d == c for d, c in rows),
            "calls_on_call_requests": sum(d and c for d, c in rows),
            "words_on_words_requests": sum(not d and not c for d, c in rows),
            "words_precision": sum(not c for c in words) / len(words) if words else None}


def _each_side(margins: Sequence[float | None], labels: Sequence[bool], open_: Sequence[bool],
               **choose: Any) -> dict[str, tuple[float, dict[str, Any]]]:
    """A decision split in two by ``open_``: :func:`choose_call_bias` (with ``choose``'s options) on the decisions
    where something is left open (``open``) and on the others (``nothing_open``)."""
    return {name: choose_call_bias([m for m, o in zip(margins, open_) if o == flag],
                                   [c for c, o in zip(labels, open_) if o == flag], **choose)
            for name, flag in (("open", True), ("nothing_open", False))}


def choose_call_biases(margins: Sequence[float | None], is_call: Sequence[bool],
                       open_: Sequence[bool]) -> tuple[float, float | None, dict[str, Any]]:
    """``(call_bias, call_open_bias, stats)``: the call-or-words decision split like the one after a call — requests
    that ask for something by an id or a tool's words (``constrain.left_open`` before any call; ``call_open_bias``)
    and the others (``call_bias``) — each side's bias by :func:`choose_call_bias` with the words-precision floor.
    With fewer than ``MIN_OPEN_DECISIONS`` requests on either side, one bias for all and ``call_open_bias`` None."""
    if min(sum(open_), len(open_) - sum(open_)) < MIN_OPEN_DECISIONS:
        bias, stats = choose_call_bias(margins, is_call, min_words_precision=MIN_WORDS_PRECISION)
        return bias, None, stats
    each = _each_side(margins, is_call, open_, min_words_precision=MIN_WORDS_PRECISION)
    per_request = [each["open"][0] if o else each["nothing_open"][0] for o in open_]
    n_call = sum(c for m, c in zip(margins, is_call) if m is not None)
    n = sum(m is not None for m in margins)
    stats = {"examples": n, "call_requests": n_call, "words_requests": n - n_call,
             "no_call_possible": len(margins) - n, "min_words_precision": MIN_WORDS_PRECISION,
             "before": _call_counts(margins, is_call, [0.0] * len(margins)),
             "after": _call_counts(margins, is_call, per_request),
             **{name: {"bias": b, **st} for name, (b, st) in each.items()}}
    return each["nothing_open"][0], each["open"][0], stats


def calibrate(predictor: Any, examples: Sequence[Example],
              batch_size: int = 8) -> tuple[float, float | None, dict[str, Any]]:
    """The call biases for ``predictor`` chosen on ``examples`` (their gold: a call or words):
    ``(call_bias, call_open_bias, stats)`` (:func:`choose_call_biases`)."""
    margins = call_margins(predictor, [ex.request for ex in examples], batch_size)
    return choose_call_biases(margins, [bool(ex.calls) for ex in examples],
                              [left_open(ex.request, "") for ex in examples])


def passing_margins(predictor: Any, examples: Sequence[Example], kinds: Sequence[str] = ("enum", "tool"),
                    batch_size: int = 8) -> dict[str, tuple[list[float], list[bool]]]:
    """:func:`gold_margins`' weighed choices (``enum``, ``tool``): per kind, margins and whether the gold keeps to
    it."""
    return gold_margins(predictor, examples, kinds, batch_size)  # type: ignore[return-value]


def choose_weighed(margins: Sequence[float], keeps: Sequence[bool]) -> tuple[float | None, dict[str, Any]]:
    """The bias of a weighed choice (``enum``, ``tool``) by :func:`choose_call_bias` (the middle rule) on its
    decisions (:func:`passing_margins`), with how; ``None`` where there are none."""
    if not margins:
        return None, {"decisions": 0}
    bias, stats = choose_call_bias(margins, keeps)
    return bias, _decision_stats(bias, stats, ("kept", "passed_by"), ("kept", "passed_by"))


#: The fewest decisions with something left open (``constrain.left_open``) that get their own bias; with fewer, every
#: decision after a call shares one bias.
MIN_OPEN_DECISIONS = 10


def _decision_stats(bias: float, stats: dict[str, Any], names: tuple[str, str],
                    kept: tuple[str, str]) -> dict[str, Any]:
    """:func:`choose_call_bias`'s counts in the words of another decision than call or words: ``names`` for its two
    sides (the call side first), ``kept`` for the decisions of each side that stay right, before and after."""
    out = {"bias": bias, "decisions": stats["examples"], names[0]: stats["call_requests"],
           names[1]: stats["words_requests"]}
    for side in ("before", "after"):
        c = stats[side]
        out[side] = {"right": c["right"], kept[0]: c["calls_on_call_requests"], kept[1]: c["words_on_words_requests"]}
    return out


def _next_call_stats(bias: float, stats: dict[str, Any]) -> dict[str, Any]:
    return _decision_stats(bias, stats, ("another_call", "end"), ("another_call_kept", "end_kept"))


def choose_next_call_biases(margins: Sequence[float], more: Sequence[bool],
                            open_: Sequence[bool]) -> tuple[float, float | None, dict[str, Any]]:
    """``(next_call_bias, open_bias, stats)``: the decision after a call split in two, each side's bias chosen by
    :func:`choose_call_bias` on its own decisions — while the request still asks for something no call has
    answered (``constrain.left_open``; ``open_bias``), and otherwise (``next_call_bias``). Measured on
    ``runs/r3``'s validation split (when only ids counted as open): of 110 decisions, the 22 with an id left
    open all had another call due, and the model ended the calls on 21 of them at bias 0; one bias for all gets
    100 right, one per side 105. With fewer than ``MIN_OPEN_DECISIONS`` open decisions (or none on the other
    side), one bias for all and ``open_bias`` None."""
    if sum(open_) < MIN_OPEN_DECISIONS or all(open_):
        bias, stats = choose_call_bias(margins, more)
        return bias, None, _next_call_stats(bias, stats)
    each = {name: _next_call_stats(*side) for name, side in _each_side(margins, more, open_).items()}
    a, b = each["open"], each["nothing_open"]
    total: dict[str, Any] = {k: a[k] + b[k] for k in ("decisions", "another_call", "end")}
    total.update({side: {k: a[side][k] + b[side][k] for k in a[side]} for side in ("before", "after")})
    return b["bias"], a["bias"], {**total, **each}


def read_calibration_files(paths: Sequence[str]) -> list[Example]:
    """The examples of every file in ``paths``, in order, read strictly (a bad line stops with its file, line and
    field): ``tether-tune calibrate --val_file`` and ``tether-tune train --calibration_files``."""
    return [ex for path in paths for ex in read_examples(path, strict=True)[0]]


def calibrate_run_info(info: Any, predictor: Any, examples: Sequence[Example], val_files: Sequence[str],
                       batch_size: int = 8) -> str:
    """Calibrate every decision and record the biases and how they were chosen in ``info`` (a
    ``rundir.RunInfo``), with the files the examples came from; returns lines saying what changed."""
    val_file = " + ".join(str(f) for f in val_files)
    bias, call_open_bias, stats = calibrate(predictor, examples, batch_size)
    info.call_bias, info.call_open_bias = bias, call_open_bias
    info.call_calibration = {**stats, "val_file": val_file}
    gold = gold_margins(predictor, examples, ("next_call", "enum", "tool"), batch_size)  # one forward for the three
    more, open_bias, more_stats = choose_next_call_biases(*gold["next_call"])
    info.next_call_bias, info.open_bias = more, open_bias
    info.next_call_calibration = {**more_stats, "val_file": val_file}
    (enum_bias, enum_stats), (tool_bias, tool_stats) = choose_weighed(*gold["enum"]), choose_weighed(*gold["tool"])
    info.enum_bias, info.enum_calibration = enum_bias, {**enum_stats, "val_file": val_file}
    info.tool_bias, info.tool_calibration = tool_bias, {**tool_stats, "val_file": val_file}
    precision = stats["after"]["words_precision"]
    opened = ("" if open_bias is None else
              f" ({open_bias:+.3f} while the request asks for something no call has answered: "
              f"{more_stats['open']['decisions']} of them)")
    call_opened = ("" if call_open_bias is None else
                   f" ({call_open_bias:+.3f} where the request asks for something: an id or a tool by its words, "
                   f"{stats['open']['examples']} of them)")
    return (f"call-or-words bias {bias:+.3f}{call_opened}: {stats['before']['right']} -> {stats['after']['right']} of "
            f"{stats['examples']} decisions right on {val_file} (words answers right: "
            f"{'none given' if precision is None else f'{precision:.1%}'}; floor {MIN_WORDS_PRECISION:.0%})\n"
            f"another-call-or-end bias {more:+.3f}{opened}: {more_stats['before']['right']} -> "
            f"{more_stats['after']['right']} of {more_stats['decisions']} decisions right\n"
            + _weighed_line("enum", enum_bias, enum_stats, "no optional enum argument stated in a call's request",
                            "taken from passing by an enum argument the request states") + "\n"
            + _weighed_line("tool", tool_bias, tool_stats, "no tool asked for at a call's tool name",
                            "taken from a tool name's tokens that lead away from the tools the request asks for"))


def _weighed_line(kind: str, bias: float | None, stats: dict[str, Any], none: str, what: str) -> str:
    if bias is None:
        return f"{kind} bias: no decisions ({none})"
    return (f"{kind} bias {bias:+.3f} ({what}): {stats['before']['right']} -> {stats['after']['right']} of "
            f"{stats['decisions']} decisions right")


# --------------------------------------------------------------------------------------------------------------
# CLI: tether-tune calibrate
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CalibrateConfig:
    """Choose a run's call-or-words and another-call-or-end biases on validation data and store them in its
    run_info.json."""

    model_path: str = field(default="", metadata={"help": "a training output directory (run directory)"})
    val_file: list[str] = field(default_factory=list, metadata={
        "help": "validation examples, one file or several (any format tether-tune reads, gold answers with "
                "acceptable values too); never a test set"})
    grounded: bool = field(default=True, metadata={"help": "measure under the grounded grammar (what prediction uses by default)"})
    batch_size: int = field(default=8, metadata={"help": "requests per forward"})
    dry_run: bool = field(default=False, metadata={"help": "print the chosen bias, leave run_info.json as it is"})

    def validate(self) -> None:
        from pathlib import Path

        from .rundir import is_run_dir

        if not self.model_path or not is_run_dir(self.model_path):
            raise ConfigError(f"--model_path {self.model_path!r}: not a run directory (no adapter_config.json)")
        if not self.val_file:
            raise ConfigError("--val_file is required")
        for path in self.val_file:
            if not Path(path).is_file():
                raise ConfigError(f"--val_file {path!r}: no such file")
        if self.batch_size < 1:
            raise ConfigError("--batch_size must be at least 1")


def run_calibrate(cfg: CalibrateConfig) -> int:
    cfg.validate()
    print_config(cfg)
    from .predict import Predictor
    from .rundir import load_run, write_run_info

    run = load_run(cfg.model_path)
    examples = read_calibration_files(cfg.val_file)
    predictor = Predictor.from_run(run, constrained=True, grounded=cfg.grounded, call_bias=0.0)
    say(calibrate_run_info(run.info, predictor, examples, cfg.val_file, cfg.batch_size))
    if not cfg.dry_run:
        say(f"stored in {write_run_info(cfg.model_path, run.info)}")
    return 0



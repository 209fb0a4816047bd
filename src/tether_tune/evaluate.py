"""Evaluation: score model outputs against gold examples, and ``tether-tune evaluate``.

:func:`score` is a pure function of the gold examples and the raw model turns (control tokens kept). Every
output goes through the one lenient parser (``format.parse_output``), then ``tools.coerce_call`` (the reading a
served call gets: ``priority:<escape>8<escape>`` becomes 8), then ``tools.validate_call``.

Metric definitions (per example unless said; n = number of examples):

- **value acceptable**: equals one of the gold's acceptable values. Strings compare after lower-casing and
  removing whitespace and ``, . / - _ * ^``; numbers by value (8 == 8.0) but a bool is never a number; lists
  item by item, objects key by key; a value of another type never matches (``"8"`` vs 8 only matches after
  coercion made it 8). A gold list of one value is that one value, normalised the same way.
- **exact_call_accuracy**: the output parses without error, has as many calls as the gold, and the best
  pairing of predicted to gold calls (order-free) pairs every call with one of the same name, the same
  argument names (an argument absent from the gold must be absent) and acceptable values, and every
  predicted call is schema-valid. A no-call gold is exact when the output parses and has no call. Words
  beside calls are ignored; an output cut off at the generation limit never parses (see ``unfinished``).
- **tool_selection_accuracy**: the output parses and the multiset of called names equals the gold's
  (no-call: no names on either side).
- **argument_precision / recall / f1** (micro): a predicted argument is a true positive when its call is
  paired (best pairing, as above) with a gold call of the same name that has that argument and the value is
  acceptable. precision = TP / all arguments of all parsed predicted calls; recall = TP / all arguments of
  all gold calls; f1 their harmonic mean. Calls without arguments add nothing to either side.
- **parse_rate**: outputs the parser reads without any error.
- **schema_valid_rate**: outputs that parse and whose every call validates after coercion (no calls: valid).
- **no_call_precision / no_call_recall**: positive class "answered in words" = the output parses and has no
  call. precision = right no-calls / predicted no-calls; recall = right no-calls / gold no-calls.
- **per_tool[T]**: the metrics above over the examples whose gold calls include T (an example with several
  gold calls counts once under each of its tools; "(no call)" for no-call gold), plus ``tool_precision`` /
  ``tool_recall`` one-vs-rest over all examples (called T anywhere vs gold includes T); for "(no call)"
  these are no_call_precision / no_call_recall.
- **confusion**: one count per example, rows = gold class, columns = predicted class. Gold class = the first
  gold call's tool, or "(no call)". Predicted class = the gold class when the output called that tool
  anywhere (so order never counts against a multi-call answer), else the first called tool, else
  "(unparsable)" when the parser reported an error, else "(no call)".
- A ratio whose denominator is 0 is 1.0 when the numerator's other side is empty too (nothing expected and
  nothing claimed), else 0.0.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import ConfigError, atomic_write_text, config_dict, print_config
from .data import DataError, Example, read_examples
from .format import Call, parse_output
from .tools import DEFAULT_TOOLS_FILE, coerce_call, load_tools, tool_map, validate_call

NO_CALL = "(no call)"
UNPARSABLE = "(unparsable)"
REPORT_KEYS = (
    "n", "exact_call_accuracy", "tool_selection_accuracy", "argument_precision", "argument_recall",
    "argument_f1", "parse_rate", "schema_valid_rate", "no_call_precision", "no_call_recall", "per_tool",
    "confusion", "failures",
)
HEADLINE = (
    ("exact_call_accuracy", "exact-call accuracy"),
    ("tool_selection_accuracy", "tool selection"),
    ("argument_precision", "argument precision"),
    ("argument_recall", "argument recall"),
    ("argument_f1", "argument F1"),
    ("parse_rate", "parse rate"),
    ("schema_valid_rate", "schema-valid rate"),
    ("no_call_precision", "no-call precision"),
    ("no_call_recall", "no-call recall"),
)
_MAX_PAIRINGS = 50_000  # past this many pairings of calls, pair greedily instead

# --------------------------------------------------------------------------------------------------------------
# Values and calls
# --------------------------------------------------------------------------------------------------------------

_IGNORED = re.compile(r"[\s,./\-_*^]")


def normalize_text(text: str) -> str:
    """Lower-case, without whitespace and ``, . / - _ * ^``: "Fix login-bug" and "fix_loginbug" read alike."""
    return _IGNORED.sub("", text.lower())


def values_match(pred: Any, gold: Any) -> bool:
    if isinstance(pred, bool) or isinstance(gold, bool):  # before numbers: a bool is an int in Python
        return isinstance(pred, bool) and isinstance(gold, bool) and pred == gold
    if isinstance(pred, (int, float)) and isinstance(gold, (int, float)):
        return pred == gold
    if isinstance(pred, str) and isinstance(gold, str):
        return normalize_text(pred) == normalize_text(gold)
    if isinstance(pred, list) and isinstance(gold, list):
        return len(pred) == len(gold) and all(values_match(p, g) for p, g in zip(pred, gold))
    if isinstance(pred, dict) and isinstance(gold, dict):
        return pred.keys() == gold.keys() and all(values_match(pred[k], gold[k]) for k in gold)
    return pred is None and gold is None


def value_acceptable(pred: Any, acceptable: Sequence[Any]) -> bool:
    return any(values_match(pred, g) for g in acceptable)


def compare_call(pred: Call, gold_name: str, acceptable: Mapping[str, Sequence[Any]]) -> tuple[int, list[str]]:
    """(true-positive arguments, problems) of a predicted call against one gold call; no problems = exact."""
    if pred.name != gold_name:
        return 0, [f"wrong tool: expected {gold_name}, got {pred.name}"]
    tp, problems = 0, []
    for key, values in acceptable.items():
        if key not in pred.arguments:
            problems.append(f"missing argument {gold_name}.{key}")
        elif value_acceptable(pred.arguments[key], values):
            tp += 1
        else:
            problems.append(f"{gold_name}.{key}={pred.arguments[key]!r} is not acceptable (gold: {list(values)!r})")
    problems += [f"extra argument {gold_name}.{k}={v!r}" for k, v in pred.arguments.items() if k not in acceptable]
    return tp, problems


def match_calls(
    preds: Sequence[Call], gold_names: Sequence[str], acceptable: Sequence[Mapping[str, Sequence[Any]]]
) -> list[tuple[int, int]]:
    """The best pairing ``[(gold index, predicted index)]`` of min(#gold, #pred) pairs: most exact calls, then
    most same-name pairs, then most true-positive arguments. Exhaustive for small counts, greedy past that."""
    table = {}
    for g, p in itertools.product(range(len(gold_names)), range(len(preds))):
        tp, problems = compare_call(preds[p], gold_names[g], acceptable[g])
        table[g, p] = (int(not problems), int(preds[p].name == gold_names[g]), tp)

    def value(pairs: Sequence[tuple[int, int]]) -> tuple[int, ...]:
        return tuple(sum(table[pair][i] for pair in pairs) for i in range(3))

    ng, np_ = len(gold_names), len(preds)
    k = min(ng, np_)
    if math.perm(max(ng, np_), k) <= _MAX_PAIRINGS:
        if ng <= np_:
            options = ([(g, p) for g, p in zip(range(ng), perm)] for perm in itertools.permutations(range(np_), k))
        else:
            options = ([(g, p) for g, p in zip(perm, range(np_))] for perm in itertools.permutations(range(ng), k))
        return max(options, key=value, default=[])
    pairs, free_g, free_p = [], set(range(ng)), set(range(np_))
    for _ in range(k):
        g, p = max(itertools.product(sorted(free_g), sorted(free_p)), key=lambda gp: table[gp])
        pairs.append((g, p))
        free_g.discard(g)
        free_p.discard(p)
    return sorted(pairs)


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Scored:
    """What one output got right and wrong (the unit every metric counts)."""

    gold_names: list[str]
    pred_names: list[str]
    parse_ok: bool
    schema_ok: bool
    exact: bool
    tool_ok: bool
    tp: int
    n_pred_args: int
    n_gold_args: int
    coerced: bool
    calls: list[Call]
    reasons: list[str] = field(default_factory=list)

    @property
    def gold_no_call(self) -> bool:
        return not self.gold_names

    @property
    def pred_no_call(self) -> bool:
        return self.parse_ok and not self.pred_names

    @property
    def gold_class(self) -> str:
        return self.gold_names[0] if self.gold_names else NO_CALL

    @property
    def pred_class(self) -> str:
        if self.gold_names and self.gold_names[0] in self.pred_names:
            return self.gold_names[0]
        if self.pred_names:
            return self.pred_names[0]
        return NO_CALL if self.parse_ok else UNPARSABLE


def _score_one(example: Example, output: str, tools: Sequence[Mapping[str, Any]], unfinished: bool = False) -> _Scored:
    tools = example.tools or tools
    parsed = parse_output(output)
    if unfinished:
        parsed.errors.insert(0, "unfinished: generation stopped at max_new_tokens before a stop token")
    coerced = [coerce_call(c, tools) for c in parsed.calls]
    calls = [c.call for c in coerced]
    schema_errors = [e for c in calls for e in validate_call(c, tools)]
    gold_names = [c.name for c in example.calls]
    acceptable = example.acceptable_values()
    pairs = match_calls(calls, gold_names, acceptable)

    tp, reasons = 0, []
    if parsed.errors:
        reasons.append(parsed.errors[0] if unfinished else f"unparsable: {parsed.errors[0]}")
    if not gold_names and calls:
        reasons.append(f"called {', '.join(c.name for c in calls)} where a words answer was expected")
    elif gold_names and not calls and parsed.ok:
        reasons.append(f"answered in words where a call of {', '.join(gold_names)} was expected")
    else:
        for g, p in pairs:
            pair_tp, problems = compare_call(calls[p], gold_names[g], acceptable[g])
            tp += pair_tp
            reasons += problems
        paired_g, paired_p = {g for g, _ in pairs}, {p for _, p in pairs}
        reasons += [f"missing call {gold_names[g]}" for g in range(len(gold_names)) if g not in paired_g]
        reasons += [f"extra call {calls[p].name}" for p in range(len(calls)) if p not in paired_p]
    reasons += [f"schema: {e}" for e in schema_errors]
    pred_names = [c.name for c in calls]
    return _Scored(
        gold_names=gold_names,
        pred_names=pred_names,
        parse_ok=parsed.ok,
        schema_ok=parsed.ok and not schema_errors,
        exact=not reasons,
        tool_ok=parsed.ok and Counter(pred_names) == Counter(gold_names),
        tp=tp,
        n_pred_args=sum(len(c.arguments) for c in calls),
        n_gold_args=sum(len(a) for a in acceptable),
        coerced=any(c.coerced for c in coerced),
        calls=calls,
        reasons=reasons,
    )


def _ratio(num: int, den: int, other_side: int) -> float:
    """num/den; for den == 0: 1.0 when ``other_side`` (the count it would be compared against) is 0 too."""
    if den:
        return num / den
    return 1.0 if other_side == 0 else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _metrics(rows: Sequence[_Scored]) -> dict[str, Any]:
    n = len(rows)
    tp, n_pred, n_gold = (sum(getattr(r, a) for r in rows) for a in ("tp", "n_pred_args", "n_gold_args"))
    p, r = _ratio(tp, n_pred, n_gold), _ratio(tp, n_gold, n_pred)
    nc_pred = sum(r.pred_no_call for r in rows)
    nc_gold = sum(r.gold_no_call for r in rows)
    nc_tp = sum(r.pred_no_call and r.gold_no_call for r in rows)
    return {
        "n": n,
        "exact_call_accuracy": _ratio(sum(r.exact for r in rows), n, n),
        "tool_selection_accuracy": _ratio(sum(r.tool_ok for r in rows), n, n),
        "argument_precision": p,
        "argument_recall": r,
        "argument_f1": _f1(p, r),
        "parse_rate": _ratio(sum(r.parse_ok for r in rows), n, n),
        "schema_valid_rate": _ratio(sum(r.schema_ok for r in rows), n, n),
        "no_call_precision": _ratio(nc_tp, nc_pred, nc_gold),
        "no_call_recall": _ratio(nc_tp, nc_gold, nc_pred),
    }


def _expected(example: Example) -> dict[str, Any]:
    calls = [{"name": c.name, "arguments": acc} for c, acc in zip(example.calls, example.acceptable_values())]
    return {"calls": calls, "text": None if calls else example.text}


def score(
    examples: Sequence[Example],
    outputs: Sequence[str],
    tools: Sequence[Mapping[str, Any]],
    unfinished: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The report for ``outputs[i]`` (the raw model turn, control tokens kept) answering ``examples[i]``.

    ``unfinished[i]``: the generator hit its token limit before a stop token; such an output counts as a parse
    failure, whatever its prefix reads as (a cut-off sentence is not an answer).
    Keys: :data:`REPORT_KEYS` (metrics defined in this module's docstring), then ``meta`` (counts that are
    not metrics: outputs changed by coercion, unfinished outputs)."""
    unfinished = list(unfinished) if unfinished is not None else [False] * len(outputs)
    if not len(examples) == len(outputs) == len(unfinished):
        raise ValueError(f"{len(examples)} examples but {len(outputs)} outputs ({len(unfinished)} unfinished flags)")
    if not examples:
        raise ValueError("no examples to score")
    rows = [_score_one(ex, out, tools, u) for ex, out, u in zip(examples, outputs, unfinished)]
    report = _metrics(rows)

    known = list(tool_map(tools))
    gold_labels = {name for r in rows for name in r.gold_names}
    per_tool: dict[str, Any] = {}
    for label in [t for t in known if t in gold_labels] + sorted(gold_labels - set(known)) + [NO_CALL]:
        if label == NO_CALL:
            in_gold = [r.gold_no_call for r in rows]
            in_pred = [r.pred_no_call for r in rows]
        else:
            in_gold = [label in r.gold_names for r in rows]
            in_pred = [label in r.pred_names for r in rows]
        if not any(in_gold):
            continue
        both, n_gold, n_pred = sum(map(min, in_gold, in_pred)), sum(in_gold), sum(in_pred)
        per_tool[label] = _metrics([r for r, g in zip(rows, in_gold) if g])
        per_tool[label]["tool_precision"] = _ratio(both, n_pred, n_gold)
        per_tool[label]["tool_recall"] = _ratio(both, n_gold, n_pred)
    report["per_tool"] = per_tool

    classes = {r.gold_class for r in rows} | {r.pred_class for r in rows}
    labels = [t for t in known if t in classes] + sorted(classes - set(known) - {NO_CALL, UNPARSABLE})
    labels += [NO_CALL] + ([UNPARSABLE] if UNPARSABLE in classes else [])
    counts = Counter((r.gold_class, r.pred_class) for r in rows)
    report["confusion"] = {
        "labels": labels,
        "rows": "gold",
        "columns": "predicted",
        "matrix": [[counts[g, p] for p in labels] for g in labels],
    }
    report["failures"] = [
        {
            "index": i,
            "id": ex.id,
            "query": ex.request,
            "expected": _expected(ex),
            "got": out,
            "parsed": [c.to_dict() for c in r.calls],
            "reason": "; ".join(r.reasons),
        }
        for i, (ex, out, r) in enumerate(zip(examples, outputs, rows))
        if not r.exact
    ]
    report["meta"] = {"coerced_outputs": sum(r.coerced for r in rows), "unfinished_outputs": sum(unfinished)}
    return report


# --------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _code(text: str) -> str:
    return "`" + text.replace("\n", "\\n").replace("\t", "\\t").replace("`", "'") + "`"


def _latency_rows(latency: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("latency p50 (s/example)", f"{latency['p50_s']:.3f}"),
        ("latency p95 (s/example)", f"{latency['p95_s']:.3f}"),
        ("tokens/s", f"{latency['tokens_per_s']:.1f}"),
    ]


def headline_markdown(report: Mapping[str, Any]) -> str:
    rows = [("examples", str(report["n"]))] + [(label, _pct(report[key])) for key, label in HEADLINE]
    if report.get("latency"):
        rows += _latency_rows(report["latency"])
    return "\n".join(["| metric | value |", "|---|---:|"] + [f"| {a} | {b} |" for a, b in rows])


def markdown_summary(report: Mapping[str, Any], title: str = "Evaluation", max_failures: int = 10) -> str:
    """Headline table, per-tool table, confusion matrix and the first failures."""
    out = [f"# {title}", "", headline_markdown(report), "", "## Per tool", ""]
    out += ["| gold tool | n | exact | tool selection | argument F1 | tool precision | tool recall |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in report["per_tool"].items():
        out.append(f"| {name} | {m['n']} | {_pct(m['exact_call_accuracy'])} | {_pct(m['tool_selection_accuracy'])}"
                   f" | {_pct(m['argument_f1'])} | {_pct(m['tool_precision'])} | {_pct(m['tool_recall'])} |")
    conf = report["confusion"]
    out += ["", "## Confusion (rows: gold, columns: predicted)", ""]
    out += ["| gold \\ predicted | " + " | ".join(conf["labels"]) + " |", "|---" + "|---:" * len(conf["labels"]) + "|"]
    for label, row in zip(conf["labels"], conf["matrix"]):
        out.append(f"| {label} | " + " | ".join(str(c) if c else "·" for c in row) + " |")
    failures = report["failures"]
    out += ["", f"## Failures ({len(failures)} of {report['n']}" + (f", first {max_failures}" if len(failures) > max_failures else "") + ")", ""]
    for f in failures[:max_failures]:
        expected = json.dumps(f["expected"]["calls"], ensure_ascii=False) if f["expected"]["calls"] else NO_CALL
        out += [f"- **{f['id'] if f['id'] is not None else '#' + str(f['index'])}** {_code(f['query'])}",
                f"  - reason: {f['reason']}", f"  - expected: {_code(expected)}", f"  - got: {_code(f['got'])}"]
    return "\n".join(out) + "\n"


def compare_markdown(reports: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """Side-by-side table of several reports (columns in the order given), then exact accuracy per tool."""
    names = list(reports)
    out = [f"# {title}", ""] if title else []
    out += ["| metric | " + " | ".join(names) + " |", "|---" + "|---:" * len(names) + "|"]
    out.append("| examples | " + " | ".join(str(r["n"]) for r in reports.values()) + " |")
    for key, label in HEADLINE:
        out.append(f"| {label} | " + " | ".join(_pct(r[key]) for r in reports.values()) + " |")
    if all(r.get("latency") for r in reports.values()):
        lat = [dict(_latency_rows(r["latency"])) for r in reports.values()]
        for label in lat[0]:
            out.append(f"| {label} | " + " | ".join(x[label] for x in lat) + " |")
    tools = list(dict.fromkeys(t for r in reports.values() for t in r["per_tool"]))
    out += ["", "| exact-call accuracy by gold tool | " + " | ".join(names) + " |", "|---" + "|---:" * len(names) + "|"]
    for t in tools:
        cells = [_pct(r["per_tool"][t]["exact_call_accuracy"]) if t in r["per_tool"] else "–" for r in reports.values()]
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Predictions files and generation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SavedPrediction:
    output: str
    id: str | None = None
    input: str | None = None
    source: str = ""


def read_predictions(path: str | Path) -> list[SavedPrediction]:
    """``{"id" or "input", "output": "<raw model turn>"}`` per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, "no such predictions file (--predictions)")
    preds = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            source = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(source, None, f"not valid JSON (column {err.colno}: {err.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("output"), str):
                raise DataError(source, "output", 'expected {"id" or "input", "output": "<raw model text>"}')
            pid, text = rec.get("id"), rec.get("input", rec.get("query"))
            preds.append(SavedPrediction(rec["output"], None if pid is None else str(pid), text, source))
    return preds


def matched_by_id(examples: Sequence[Example], preds: Sequence[SavedPrediction]) -> bool:
    return all(ex.id is not None for ex in examples) and all(p.id is not None for p in preds)


def match_predictions(examples: Sequence[Example], preds: Sequence[SavedPrediction]) -> list[str]:
    """The output for each example: by id when every example and every prediction has one, else by line.
    A missing prediction, a duplicate id or a prediction whose input differs from the gold request is an error."""
    if matched_by_id(examples, preds):
        by_id: dict[str, SavedPrediction] = {}
        for p in preds:
            if p.id in by_id:
                raise DataError(p.source, "id", f"id {p.id!r} again (first at {by_id[p.id].source})")
            by_id[p.id] = p
        missing = [ex for ex in examples if str(ex.id) not in by_id]
        if missing:
            ids = ", ".join(repr(ex.id) for ex in missing[:5])
            raise DataError(missing[0].source, "id", f"{len(missing)} gold examples have no prediction (ids {ids}"
                            + (", ..." if len(missing) > 5 else "") + ")")
        extra = len(preds) - len(examples)
        if extra:
            print(f"note: {extra} predictions are for no gold example scored here; they are left out", file=sys.stderr)
        chosen = [by_id[str(ex.id)] for ex in examples]
    else:
        if len(preds) != len(examples):
            raise DataError(preds[-1].source if preds else "predictions", None,
                            f"{len(preds)} predictions for {len(examples)} gold examples; without an id on every line"
                            " of both files they are matched by line, so the counts must be equal")
        chosen = list(preds)
    for ex, p in zip(examples, chosen):
        if p.input is not None and p.input.strip() != ex.request.strip():
            raise DataError(p.source, "input", f"{p.input!r} is not the gold request at {ex.source}: {ex.request!r}")
    return [p.output for p in chosen]


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(timings: Sequence[Mapping[str, float]], wall_s: float, batch_size: int) -> dict[str, Any]:
    """p50/p95 of each example's ``total_s`` (with batch_size > 1, what the predictor attributes to an example in
    a batch), and tokens/s = all new tokens / wall-clock seconds of generation."""
    totals = [float(t.get("total_s", 0.0)) for t in timings]
    tokens = sum(float(t.get("new_tokens", 0)) for t in timings)
    return {
        "p50_s": _percentile(totals, 0.50) if totals else 0.0,
        "p95_s": _percentile(totals, 0.95) if totals else 0.0,
        "mean_s": sum(totals) / len(totals) if totals else 0.0,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else 0.0,
        "new_tokens": int(tokens),
        "wall_s": wall_s,
        "batch_size": batch_size,
    }


def generate(predictor: Any, requests: Sequence[str], batch_size: int, desc: str = "generating") -> tuple[list[Any], float]:
    """Greedy predictions for every request, with a progress bar, after one untimed warm-up request; returns
    (predictions, wall seconds)."""
    from tqdm.auto import tqdm

    preds: list[Any] = []
    if requests:
        predictor.predict(requests[0])  # warm-up (lazy init, kernel selection), so it is not timed
    start = time.perf_counter()
    with tqdm(total=len(requests), desc=desc, unit="ex", file=sys.stderr) as bar:
        for i in range(0, len(requests), batch_size):
            chunk = requests[i : i + batch_size]
            preds += predictor.predict_batch(list(chunk), batch_size=batch_size)
            bar.update(len(chunk))
    return preds, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------------------
# `tether-tune evaluate`
# --------------------------------------------------------------------------------------------------------------

DECODINGS = ("constrained", "unconstrained")


@dataclass
class EvaluateConfig:
    """Score a model (generating greedily) or saved predictions against a gold test file."""

    test_file: str | None = field(default=None, metadata={"help": "gold examples (gold, original or messages JSONL)"})
    predictions: str | None = field(default=None, metadata={"help": 'score saved outputs: JSONL of {"id" or "input", "output"}'})
    model_path: str | None = field(default=None, metadata={"help": "generate with this model: training output dir or base model"})
    output: str | None = field(default=None, metadata={"help": "report JSON (Markdown beside it); default <model_path>/eval_report.json or PRED.report.json"})
    tools: str | None = field(default=None, metadata={"help": "tools file; default tools.json in --model_path if present, else codetether_tools.json"})
    compare_base: bool = field(default=False, metadata={"help": "also evaluate the base model on the same examples, side by side"})
    constrained: bool = field(default=True, metadata={"help": "grammar-constrained decoding (unless --decoding is given)"})
    decoding: str | None = field(default=None, metadata={"help": "comma list of decodings to evaluate, e.g. constrained,unconstrained"})
    max_examples: int | None = field(default=None, metadata={"help": "score only the first N gold examples"})
    batch_size: int = field(default=8, metadata={"help": "requests generated together (1 for honest per-example latency)"})
    max_new_tokens: int = field(default=128, metadata={"help": "generation limit per request"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N, mps"})
    dtype: str = field(default="auto", metadata={"help": "auto (fp32 on CPU, bf16 on GPU), float32 or bfloat16"})
    show_failures: int = field(default=10, metadata={"help": "failures listed in the Markdown summary"})

    def decodings(self) -> list[str]:
        if self.decoding:
            return [d.strip() for d in self.decoding.split(",") if d.strip()]
        return ["constrained" if self.constrained else "unconstrained"]

    def validate(self) -> None:
        if not self.test_file:
            raise ConfigError("--test_file is required (the gold examples)")
        if bool(self.predictions) == bool(self.model_path):
            raise ConfigError("give exactly one of --predictions (saved outputs) or --model_path (generate)")
        if self.predictions and (self.compare_base or self.decoding):
            raise ConfigError("--compare_base and --decoding need --model_path (they generate)")
        bad = [d for d in self.decodings() if d not in DECODINGS]
        if bad or not self.decodings():
            raise ConfigError(f"--decoding {self.decoding!r}: use a comma list of {', '.join(DECODINGS)}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError("--max_examples must be at least 1")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("--batch_size and --max_new_tokens must be at least 1")


def _tools_path(cfg: EvaluateConfig) -> str:
    if cfg.tools:
        return cfg.tools
    if cfg.model_path and (Path(cfg.model_path) / "tools.json").is_file():
        return str(Path(cfg.model_path) / "tools.json")
    return DEFAULT_TOOLS_FILE


def _output_path(cfg: EvaluateConfig) -> Path:
    if cfg.output:
        return Path(cfg.output)
    if cfg.predictions:
        return Path(cfg.predictions).with_suffix(".report.json")
    return Path(cfg.model_path) / "eval_report.json" if Path(cfg.model_path).is_dir() else Path("eval_report.json")


def _evaluate_model(cfg: EvaluateConfig, examples: list[Example], tools: list[dict]) -> dict[str, dict[str, Any]]:
    """label -> report, for the model (and the base model) under each decoding."""
    from .predict import Predictor

    if any(ex.history or ex.developer for ex in examples):
        print("note: earlier turns and developer context of the gold examples are not given to the model "
              "(the predictor takes the request alone)", file=sys.stderr)
    requests = [ex.request for ex in examples]
    is_adapter = (Path(cfg.model_path) / "adapter_config.json").is_file()
    models = [("fine-tuned" if is_adapter else "model", cfg.model_path)]
    reports: dict[str, dict[str, Any]] = {}
    several = cfg.compare_base or len(cfg.decodings()) > 1
    while models:
        label, model = models.pop(0)
        for decoding in cfg.decodings():
            predictor = Predictor.load(model, tools=tools, device=cfg.device, dtype=cfg.dtype,
                                       constrained=decoding == "constrained", max_new_tokens=cfg.max_new_tokens)
            name = f"{label} ({decoding})" if several else label
            preds, wall = generate(predictor, requests, cfg.batch_size, desc=name)
            unfinished = [any("max_new_tokens" in e for e in p.errors) for p in preds]
            report = score(examples, [p.raw for p in preds], tools, unfinished)
            report["latency"] = latency_summary([p.timings for p in preds], wall, cfg.batch_size)
            report["meta"].update(model=str(model), decoding=decoding)
            reports[name] = report
            if cfg.compare_base and label != "base":
                base = getattr(predictor, "base_model", None)
                if not base or str(base) == str(model):
                    print(f"note: --compare_base: {model} is its own base model; nothing to compare", file=sys.stderr)
                elif not any(m[0] == "base" for m in models):
                    models.append(("base", base))
            del predictor
    return reports


def run_evaluate(cfg: EvaluateConfig) -> int:
    """Score, write ``REPORT.json`` and ``REPORT.md`` atomically, print the headline table."""
    cfg.validate()
    print_config(cfg)
    tools = load_tools(_tools_path(cfg))
    examples, _ = read_examples(cfg.test_file, strict=True)
    if not examples:
        raise DataError(cfg.test_file, None, "no examples")
    preds = read_predictions(cfg.predictions) if cfg.predictions else None
    if cfg.max_examples:
        examples = examples[: cfg.max_examples]
        if preds is not None and not matched_by_id(examples, preds):
            preds = preds[: cfg.max_examples]
    if preds is not None:
        reports = {"predictions": score(examples, match_predictions(examples, preds), tools)}
    else:
        reports = _evaluate_model(cfg, examples, tools)

    main_label, report = next(iter(reports.items()))
    report = dict(report)
    meta = dict(report.pop("meta"))
    meta.update(label=main_label, test_file=cfg.test_file, tools=_tools_path(cfg), config=config_dict(cfg))
    report["meta"] = meta
    if len(reports) > 1:
        report["compare"] = {k: v for k, v in reports.items() if k != main_label}
    path = _output_path(cfg)
    title = f"Evaluation of {cfg.model_path or cfg.predictions} on {cfg.test_file}"
    md = markdown_summary(report, title, cfg.show_failures)
    if len(reports) > 1:
        md = compare_markdown(reports, title) + "\n" + markdown_summary(report, main_label, cfg.show_failures)
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(path.with_suffix(".md"), md)
    print(compare_markdown(reports) if len(reports) > 1 else headline_markdown(report))
    print(f"report: {path} (and {path.with_suffix('.md').name})", file=sys.stderr)
    return 0

"""Scoring: a pure function of gold examples and raw model outputs, and its Markdown tables.

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
- **multi_call_exact_accuracy**: exact-call accuracy over the examples whose gold has two or more calls
  (``multi_call_n`` of them; 1.0 when there are none, as every ratio with nothing on either side).
- **per_tag[T]**: the metrics above over the examples tagged T (gold data's ``tags``; empty without tags).
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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .data import Example
from .format import Call
from .text import normalize_text
from .tools import read_turn, tool_map

NO_CALL = "(no call)"
UNPARSABLE = "(unparsable)"
REPORT_KEYS = (
    "n", "exact_call_accuracy", "tool_selection_accuracy", "argument_precision", "argument_recall",
    "argument_f1", "parse_rate", "schema_valid_rate", "no_call_precision", "no_call_recall",
    "multi_call_exact_accuracy", "multi_call_n", "per_tool", "confusion", "failures", "per_tag",
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
    ("multi_call_exact_accuracy", "multi-call exact"),
)
_MAX_PAIRINGS = 50_000  # past this many pairings of calls, pair greedily instead

# --------------------------------------------------------------------------------------------------------------
# Values and calls
# --------------------------------------------------------------------------------------------------------------

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
    turn = read_turn(output, tools)  # parse -> coerce -> validate, as prediction and serving read it
    if unfinished:
        turn.parse_errors.insert(0, "unfinished: generation stopped at max_new_tokens before a stop token")
    calls, parse_errors = turn.calls, turn.parse_errors
    schema_errors = [e for errs in turn.schema_errors for e in errs]
    gold_names = [c.name for c in example.calls]
    acceptable = example.acceptable_values()
    pairs = match_calls(calls, gold_names, acceptable)

    tp, reasons = 0, []
    if parse_errors:
        reasons.append(parse_errors[0] if unfinished else f"unparsable: {parse_errors[0]}")
    if not gold_names and calls:
        reasons.append(f"called {', '.join(c.name for c in calls)} where a words answer was expected")
    elif gold_names and not calls and turn.parse_ok:
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
        parse_ok=turn.parse_ok,
        schema_ok=turn.parse_ok and not schema_errors,
        exact=not reasons,
        tool_ok=turn.parse_ok and Counter(pred_names) == Counter(gold_names),
        tp=tp,
        n_pred_args=sum(len(c.arguments) for c in calls),
        n_gold_args=sum(len(a) for a in acceptable),
        coerced=turn.coerced,
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
    multi = [r for r in rows if len(r.gold_names) > 1]
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
        "multi_call_exact_accuracy": _ratio(sum(r.exact for r in multi), len(multi), len(multi)),
        "multi_call_n": len(multi),
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
    tags = list(dict.fromkeys(t for ex in examples for t in ex.tags))
    report["per_tag"] = {t: _metrics([r for r, ex in zip(rows, examples) if t in ex.tags]) for t in tags}
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
    if report.get("per_tag"):
        out += ["", "## Per tag", "", "| tag | n | exact | tool selection | argument F1 | no-call recall |",
                "|---|---:|---:|---:|---:|---:|"]
        for name, m in report["per_tag"].items():
            out.append(f"| {name} | {m['n']} | {_pct(m['exact_call_accuracy'])} | {_pct(m['tool_selection_accuracy'])}"
                       f" | {_pct(m['argument_f1'])} | {_pct(m['no_call_recall'])} |")
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
    tags = list(dict.fromkeys(t for r in reports.values() for t in r.get("per_tag", {})))
    if tags:
        out += ["", "| exact-call accuracy by tag | " + " | ".join(names) + " |", "|---" + "|---:" * len(names) + "|"]
        for t in tags:
            cells = [_pct(r["per_tag"][t]["exact_call_accuracy"]) if t in r.get("per_tag", {}) else "–"
                     for r in reports.values()]
            out.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"

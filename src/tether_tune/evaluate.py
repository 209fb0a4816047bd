"""Evaluation: ``tether-tune evaluate`` / ``finetune.py --evaluate``.

Scores a model (generating greedily for every gold example, through the cached predictor) or outputs produced
elsewhere (``--predictions``), with :func:`tether_tune.scoring.score` — re-exported here as ``evaluate.score``.
Writes a JSON report (keys in ``REPORT_KEYS`` first) and a Markdown summary, and prints the headline table.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .calibrate import CALL_BIAS_HELP, ENUM_BIAS_HELP, NEXT_CALL_BIAS_HELP, TOOL_BIAS_HELP
from .config import ConfigError, atomic_write_text, config_dict, print_config
from .data import Example, json_record, jsonl_lines, read_examples
from .errors import DataError
from .format import MAX_NEW_TOKENS
from .modeling import DTYPE_HELP, check_dtype, check_model_arg
from .rundir import default_report_path, is_run_dir, resolve_tools, tools_path
from .scoring import score  # noqa: F401  (re-exported: evaluate.score is the documented entry point)
from .scoring import compare_markdown, headline_markdown, markdown_summary
from .tools import TOOLS_HELP

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
    preds = []
    for source, line in jsonl_lines(path, "predictions file (--predictions)"):
        rec = json_record(line, source)
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

#: grounded: the tool schema, with ids, names and text only from the request; constrained: the schema alone.
DECODINGS = ("grounded", "constrained", "unconstrained")


@dataclass
class EvaluateConfig:
    """Score a model (generating greedily) or saved predictions against a gold test file."""

    test_file: str | None = field(default=None, metadata={"help": "gold examples (gold, original or messages JSONL)"})
    predictions: str | None = field(default=None, metadata={"help": 'score saved outputs: JSONL of {"id" or "input", "output"}'})
    model_path: str | None = field(default=None, metadata={"help": "generate with this model: training output dir or base model"})
    output: str | None = field(default=None, metadata={"help": "report JSON (Markdown beside it); default <model_path>/eval_report.json or PRED.report.json"})
    tools: str | None = field(default=None, metadata={"help": TOOLS_HELP + " (or those of the run in --model_path)"})
    compare_base: bool = field(default=False, metadata={"help": "also evaluate the base model on the same examples, side by side"})
    constrained: bool = field(default=True, metadata={"help": "grammar-constrained decoding (unless --decoding is given)"})
    grounded: bool = field(default=True, metadata={"help": "with --constrained: values only from the request (unless --decoding is given)"})
    decoding: str | None = field(default=None, metadata={"help": "comma list of decodings to evaluate: grounded (schema, and values only from the request), constrained (schema alone), unconstrained; e.g. grounded,constrained,unconstrained"})
    call_bias: float | None = field(default=None, metadata={"help": CALL_BIAS_HELP})
    next_call_bias: float | None = field(default=None, metadata={"help": NEXT_CALL_BIAS_HELP})
    enum_bias: float | None = field(default=None, metadata={"help": ENUM_BIAS_HELP})
    tool_bias: float | None = field(default=None, metadata={"help": TOOL_BIAS_HELP})
    max_examples: int | None = field(default=None, metadata={"help": "score only the first N gold examples"})
    batch_size: int = field(default=8, metadata={"help": "requests generated together (1 for honest per-example latency)"})
    max_new_tokens: int = field(default=MAX_NEW_TOKENS, metadata={"help": "generation limit per request"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N, mps"})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})
    show_failures: int = field(default=10, metadata={"help": "failures listed in the Markdown summary"})

    def decodings(self) -> list[str]:
        if self.decoding:
            return [d.strip() for d in self.decoding.split(",") if d.strip()]
        if not self.constrained:
            return ["unconstrained"]
        return ["grounded" if self.grounded else "constrained"]

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
        for flag_name, path in (("--test_file", self.test_file), ("--predictions", self.predictions)):
            if path and not Path(path).is_file():
                raise ConfigError(f"{flag_name} {path}: no such file")
        if self.model_path:
            check_model_arg("--model_path", self.model_path)
        check_dtype(self.dtype)


def _tools_source(cfg: EvaluateConfig) -> str:
    """What the report names as its tools: the flag, else the run's tools.json, else the packaged default."""
    return str(cfg.tools or tools_path(cfg.model_path) or "codetether_tools.json (packaged)")


def _output_path(cfg: EvaluateConfig) -> Path:
    if cfg.output:
        return Path(cfg.output)
    if cfg.predictions:
        return Path(cfg.predictions).with_suffix(".report.json")
    return default_report_path(cfg.model_path)


def _evaluate_model(cfg: EvaluateConfig, examples: list[Example], tools: list[dict]) -> dict[str, dict[str, Any]]:
    """label -> report, for the model (and the base model) under each decoding."""
    from .predict import Predictor
    from .rundir import load_run

    if any(ex.history or ex.developer for ex in examples):
        print("note: earlier turns and developer context of the gold examples are not given to the model "
              "(the predictor takes the request alone)", file=sys.stderr)
    requests = [ex.request for ex in examples]
    models = [("fine-tuned" if is_run_dir(cfg.model_path) else "model", cfg.model_path)]
    reports: dict[str, dict[str, Any]] = {}
    several = cfg.compare_base or len(cfg.decodings()) > 1
    while models:
        label, model = models.pop(0)
        run = load_run(model, tools=tools, dtype=cfg.dtype, device=cfg.device)  # once per model, whatever the decodings
        for decoding in cfg.decodings():
            predictor = Predictor.from_run(run, constrained=decoding != "unconstrained", grounded=decoding == "grounded",
                                           max_new_tokens=cfg.max_new_tokens, call_bias=cfg.call_bias,
                                           next_call_bias=cfg.next_call_bias, enum_bias=cfg.enum_bias,
                                           tool_bias=cfg.tool_bias)
            name = f"{label} ({decoding})" if several else label
            preds, wall = generate(predictor, requests, cfg.batch_size, desc=name)
            unfinished = [any("max_new_tokens" in e for e in p.errors) for p in preds]
            report = score(examples, [p.raw for p in preds], tools, unfinished)
            report["latency"] = latency_summary([p.timings for p in preds], wall, cfg.batch_size)
            report["meta"].update(model=str(model), decoding=decoding,
                                  **{f"{k}_bias": v for k, v in predictor.biases._asdict().items()})
            reports[name] = report
            del predictor
        if cfg.compare_base and label != "base":
            if not run.base_model or str(run.base_model) == str(model):
                print(f"note: --compare_base: {model} is its own base model; nothing to compare", file=sys.stderr)
            else:
                models.append(("base", run.base_model))
        del run
    return reports


def run_evaluate(cfg: EvaluateConfig) -> int:
    """Score, write ``REPORT.json`` and ``REPORT.md`` atomically, print the headline table."""
    cfg.validate()
    print_config(cfg)
    tools = resolve_tools(cfg.tools, cfg.model_path)
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
    meta.update(label=main_label, test_file=cfg.test_file, tools=_tools_source(cfg), config=config_dict(cfg))
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

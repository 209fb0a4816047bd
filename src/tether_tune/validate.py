"""``tether-tune validate``: check data files against the tools (schema, grounding, duplicates) and print
per-tool counts, argument coverage, the no-call share and token lengths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .checks import check_example, dedupe_key
from .config import ConfigError
from .data import Example, read_examples
from .errors import DataError
from .tools import TOOLS_HELP, tool_map


@dataclass
class ValidateConfig:
    """Check data files (any accepted format) against the tools and print statistics."""

    files: list[str] = field(default_factory=list, metadata={"help": "JSONL files to check", "positional": True})
    tools: str | None = field(default=None, metadata={"help": TOOLS_HELP})
    strict: bool = field(default=False, metadata={"help": "stop at the first problem"})
    grounding: bool = field(default=True, metadata={"help": "also check every argument is stated in the request"})
    tokenizer: str | None = field(default=None, metadata={"help": "model dir/name whose tokenizer measures token lengths"})
    max_errors: int = field(default=50, metadata={"help": "print at most this many problems per file (all are counted)"})

    def validate(self) -> None:
        if not self.files:
            raise ConfigError("FILE: give at least one data file to validate")
        for f in self.files:
            if not Path(f).is_file():
                raise ConfigError(f"FILE {f}: no such file")
        if self.max_errors < 0:
            raise ConfigError(f"--max_errors {self.max_errors}: must be 0 or more")


def dataset_stats(examples: Sequence[Example], tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-tool counts, per-argument coverage (how often each optional argument is present), no-call share."""
    per_tool: dict[str, int] = {}
    arg_counts: dict[str, dict[str, int]] = {}
    n_calls = 0
    for ex in examples:
        if not ex.calls:
            per_tool["(no call)"] = per_tool.get("(no call)", 0) + 1
        if len(ex.calls) > 1:
            per_tool["(several calls)"] = per_tool.get("(several calls)", 0) + 1
        for c in ex.calls:
            n_calls += 1
            per_tool[c.name] = per_tool.get(c.name, 0) + 1
            counts = arg_counts.setdefault(c.name, {})
            for k in c.arguments:
                counts[k] = counts.get(k, 0) + 1
    coverage = {}
    for name, fn in tool_map(tools).items():
        props = (fn.get("parameters") or {}).get("properties") or {}
        n = per_tool.get(name, 0)
        coverage[name] = {k: (arg_counts.get(name, {}).get(k, 0), n) for k in props}
    return {
        "n": len(examples),
        "per_tool": per_tool,
        "coverage": coverage,
        "no_call_share": per_tool.get("(no call)", 0) / max(1, len(examples)),
    }


def check_file(path: str, tools: Sequence[Mapping[str, Any]], grounding: bool = True,
               strict: bool = False) -> tuple[list[Example], list[str]]:
    """Every example of ``path`` and every problem in it (``file:line: ...``): unreadable lines, schema and
    grounding errors, duplicates. With ``strict`` the first problem raises :class:`DataError`."""
    examples, errors = read_examples(path, strict=strict)
    problems: list[str] = [str(e) for e in errors]
    seen: dict[str, str] = {}
    for ex in examples:
        for p in check_example(ex, tools, grounding):
            if strict:
                raise DataError(ex.source, None, p)
            problems.append(f"{ex.source}: {p}")
        key = dedupe_key(ex)
        if key in seen:
            problems.append(f"{ex.source}: duplicate of {seen[key]}")
        seen.setdefault(key, ex.source)
    return examples, problems


def print_report(path: str, examples: Sequence[Example], problems: Sequence[str], tools: Sequence[Mapping[str, Any]],
                 tokenizer: Any = None, max_errors: int = 50) -> None:
    stats = dataset_stats(examples, tools)
    print(f"{path}: {stats['n']} examples, {len(problems)} problems")
    for name, n in sorted(stats["per_tool"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {n:>6}")
    print(f"  no-call share: {stats['no_call_share']:.1%}")
    print("  argument coverage (present / calls of the tool):")
    for name, cov in stats["coverage"].items():
        if cov:
            print(f"    {name}: " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in cov.items()))
    if tokenizer is not None and examples:
        from .encode import encode_example

        lengths = sorted(len(encode_example(tokenizer, ex, tools).input_ids) for ex in examples if ex.calls or ex.text)
        if lengths:
            print(f"  tokens per example: min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
    for p in problems[:max_errors]:
        print(f"  ✗ {p}")
    if len(problems) > max_errors:
        print(f"  … and {len(problems) - max_errors} more")


def run_validate(cfg: ValidateConfig) -> int:
    """Exit status 0 when every file is clean, 1 when any has problems (all are printed, up to --max_errors)."""
    cfg.validate()
    from .tools import load_tools

    tools = load_tools(cfg.tools)
    tokenizer = None
    if cfg.tokenizer:
        from .modeling import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    bad_total = 0
    for path in cfg.files:
        examples, problems = check_file(path, tools, cfg.grounding, cfg.strict)
        print_report(path, examples, problems, tools, tokenizer, cfg.max_errors)
        bad_total += len(problems)
    return 1 if bad_total else 0

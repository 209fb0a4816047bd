"""The command: ``python generate_dataset.py`` / ``tether-tune generate``: its options (:class:`GenerateConfig`),
where the files go, and the run that writes them with a count per family and the config it used."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError, print_config, save_config
from ..data import write_jsonl
from ..tools import TOOLS_HELP, load_tools
from .generate import (DEFAULT_COUNTS, FAMILIES, family_of, generate_splits, parse_split, resolve_counts, subsample,
                       to_record, with_included)


def _count(name: str) -> Any:
    return field(default=None, metadata={
        "help": f"examples answered by one {name} call; left out: {DEFAULT_COUNTS[name]}", "metavar": "N"})


@dataclass
class GenerateConfig:
    """Generate CodeTether requests with the exact calls that answer them (or a text answer)."""

    output: str = field(default="data/generated.jsonl", metadata={"help": "JSONL file to write (atomically)"})
    create_task: int | None = _count("create_task")
    list_tasks: int | None = _count("list_tasks")
    get_task: int | None = _count("get_task")
    cancel_task: int | None = _count("cancel_task")
    get_session_history: int | None = _count("get_session_history")
    playback_session: int | None = _count("playback_session")
    discover_agents: int | None = _count("discover_agents")
    send_message: int | None = _count("send_message")
    parallel: int | None = field(default=None, metadata={
        "help": f"examples whose request asks for two calls; left out: {DEFAULT_COUNTS['parallel']}", "metavar": "N"})
    no_call: int | None = field(default=None, metadata={
        "help": f"requests no tool serves, answered in words; left out: {DEFAULT_COUNTS['no_call']}", "metavar": "N"})
    seed: int = field(default=0, metadata={"help": "random seed: the same seed writes the same bytes"})
    split: str = field(default="", metadata={
        "help": "train,val,test fractions (e.g. 0.8,0.1,0.1; or train,test: 0.9,0.1): writes STEM.train.jsonl, "
                "STEM.val.jsonl, STEM.test.jsonl instead of --output; held-out splits get templates and values "
                "never seen in train"})
    split_dir: str | None = field(default=None, metadata={"help": "folder for the split files (default: beside --output)"})
    format: str = field(default="original", metadata={
        "help": "original ({input, output}), messages (chat) or gold ({query, calls})",
        "choices": ["original", "messages", "gold"]})
    tools: str | None = field(default=None, metadata={"help": TOOLS_HELP + "; every example is checked against it"})
    include: list[str] = field(default_factory=list, metadata={
        "help": "hand-written example files (any format tether-tune reads) added to the train split as they are, "
                "never held out; every example is checked against the tools (schema and grounding) and one that "
                "fails stops the run with its file and line (HANDWRITTEN=data/handwritten_train.jsonl make main "
                "adds that file)",
        "metavar": "FILE"})
    train_size: int | None = field(default=None, metadata={
        "help": "keep a seeded random N of the generated train split (val and test stay exactly as they are); the "
                "--include examples come on top. Left out: all of it", "metavar": "N"})

    def counts(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in FAMILIES}

    def validate(self) -> None:
        for name, n in self.counts().items():
            if n is not None and n < 0:
                raise ConfigError(f"--{name} must be >= 0 (got {n})")
        if self.split:
            parse_split(self.split)
        elif self.split_dir:
            raise ConfigError("--split_dir needs --split")
        if not self.output.endswith(".jsonl"):
            raise ConfigError(f"--output {self.output!r}: expected a .jsonl file name")
        for path in self.include:
            if not Path(path).is_file():
                raise ConfigError(f"--include {path}: no such file")
        if self.train_size is not None and self.train_size < 0:
            raise ConfigError(f"--train_size must be >= 0 (got {self.train_size})")


def output_paths(cfg: GenerateConfig) -> dict[str, Path]:
    out = Path(cfg.output)
    if not cfg.split:
        return {"all": out}
    folder = Path(cfg.split_dir) if cfg.split_dir else out.parent
    stem = out.name[: -len(".jsonl")]
    return {name: folder / f"{stem}.{name}.jsonl" for name in parse_split(cfg.split)}


def run_generate(cfg: GenerateConfig) -> int:
    cfg.validate()
    # The resolved config (defaults filled in) is printed and saved: it says exactly what was generated.
    cfg = dataclasses.replace(cfg, **resolve_counts(cfg.counts()))
    print_config(cfg)
    tools = load_tools(cfg.tools)
    fractions = parse_split(cfg.split) if cfg.split else None
    splits = generate_splits(cfg.counts(), cfg.seed, fractions, tools)
    first = next(iter(splits))  # train (or all, without --split)
    if cfg.train_size is not None:
        splits[first] = subsample(splits[first], cfg.train_size, cfg.seed)
    generated_train = splits[first]
    if cfg.include:
        others = [ex for name, examples in splits.items() if name != first for ex in examples]
        splits[first], skipped = with_included(splits[first], cfg.include, tools, cfg.seed, others)
        print(f"--include: {len(splits[first]) - len(generated_train)} hand-written examples added to {first}; "
              f"{len(skipped)} left out, the generator wrote the same request{':' if skipped else ''}")
        for line in skipped:
            print(f"  {line}")
    paths = output_paths(cfg)
    width = max(len(f) for f in FAMILIES)
    for name, examples in splits.items():
        if not examples and name != "all":
            continue
        n = write_jsonl(paths[name], (to_record(ex, cfg.format) for ex in examples))
        per = {f: 0 for f in FAMILIES}
        for ex in examples:
            per[family_of(ex)] += 1
        templates = len({ex.template for ex in examples})
        print(f"wrote {n} examples ({templates} templates) to {paths[name]}")
        for f in FAMILIES:
            print(f"  {f:<{width}} {per[f]:>6}")
    save_config(cfg, next(iter(paths.values())).parent / f"{Path(cfg.output).name[: -len('.jsonl')]}.config.json")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``generate_dataset.py``: the ``generate`` command under the original script's name."""
    from ..cli import run_cli

    return run_cli("generate", list(sys.argv[1:] if argv is None else argv), prog="generate_dataset.py")



"""The run directory: the written contract between training and everything that uses its result.

``tether-tune train --output_dir DIR`` writes, and prediction, evaluation, the scripts (and serving and export)
read, through this module alone — no other module spells these file names:

| file | what | written by |
|---|---|---|
| ``adapter_config.json``, ``adapter_model.safetensors`` | the LoRA adapter (PEFT's own files) | ``write_run`` |
| ``tokenizer.json``, ``tokenizer_config.json``, ... | the tokenizer the adapter was trained with | ``write_run`` |
| ``tools.json`` | the tools declared in every training prompt | ``write_run`` |
| ``train_config.json`` | the resolved ``TrainConfig`` | ``write_config`` |
| ``run_info.json`` | :class:`RunInfo`: base model, developer text, length limit, results | ``write_run`` |
| ``metrics.jsonl`` | one JSON object per logged training step and validation pass | the trainer |
| ``checkpoints/`` | the Trainer's resumable checkpoints | the trainer |
| ``tensorboard/`` | TensorBoard logs, when TensorBoard is installed | the trainer |
| ``eval_report.json``, ``eval_report.md`` | ``tether-tune evaluate``'s default report | evaluation |

:func:`load_run` is the one way to load a model for use: a run directory (its base model, the adapter merged
into it, its tokenizer, tools and developer text), or any other model argument (a model directory, a hub id, a
``.gguf``, the offline preset) with the default tools.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import atomic_write_text, save_config
from .errors import DataError, ModelNotFoundError

ADAPTER_CONFIG = "adapter_config.json"  # PEFT's name; its presence makes a directory a run directory
TOKENIZER_FILE = "tokenizer.json"
TOOLS_FILE = "tools.json"
CONFIG_FILE = "train_config.json"
RUN_INFO_FILE = "run_info.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
EVAL_REPORT = "eval_report.json"


@dataclass
class RunInfo:
    """``run_info.json``: what a run was trained from and what it measured."""

    base_model: str  # what from_pretrained loads (a resolved directory, or a hub id)
    base_model_name: str | None = None  # the model argument as the user gave it
    developer: str | None = None  # context before the trigger sentence in the developer turn
    max_seq_length: int | None = None
    mask_audit: dict[str, Any] = field(default_factory=dict)
    val_exact_call_accuracy_before: float | None = None
    val_exact_call_accuracy_per_epoch: list[float] = field(default_factory=list)
    val_exact_call_accuracy_best: float | None = None
    val_loss_per_epoch: list[float] = field(default_factory=list)
    best_checkpoint: str | None = None
    train_seconds: float | None = None
    global_steps: int | None = None
    train_tokens: int | None = None
    train_batches: int | None = None  # micro-batches on this process (rank 0)
    shared_prefix_batches: int | None = None  # of which computed the developer turn once (trainer.shared_prefix_loss)
    interrupted_at_step: int | None = None
    world_size: int = 1
    call_bias: float | None = None  # added to <start_function_call>'s first-token score (calibrate.py)
    call_open_bias: float | None = None  # used instead where the request asks for something (calibrate.py)
    call_calibration: dict[str, Any] = field(default_factory=dict)  # how call_bias was chosen
    next_call_bias: float | None = None  # added to <start_function_call>'s score after each call (calibrate.py)
    open_bias: float | None = None  # used instead while the request asks for what no call has answered (calibrate.py)
    next_call_calibration: dict[str, Any] = field(default_factory=dict)  # how next_call_bias was chosen
    enum_bias: float | None = None  # taken from tokens that pass by an enum argument the request states (calibrate.py)
    enum_calibration: dict[str, Any] = field(default_factory=dict)  # how enum_bias was chosen
    tool_bias: float | None = None  # taken from tool-name tokens that lead away from the tools asked for (calibrate.py)
    tool_calibration: dict[str, Any] = field(default_factory=dict)  # how tool_bias was chosen
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **{k: v for k, v in d.items() if v not in (None, [], {})}, "base_model": self.base_model}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = RUN_INFO_FILE) -> "RunInfo":
        if not isinstance(d, Mapping) or not isinstance(d.get("base_model"), str):
            raise DataError(source, "base_model", "a run_info.json needs the base model it was trained from")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if "open_id_bias" in d and "open_bias" not in d:  # its name before it also weighed tools asked for
            d = {**{k: v for k, v in d.items() if k != "open_id_bias"}, "open_bias": d["open_id_bias"]}
        return cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}", None, f"not valid JSON (column {err.colno}: {err.msg})") from None


def is_run_dir(path: str | os.PathLike) -> bool:
    """A training output directory (a LoRA adapter with its run files), as opposed to a plain model."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def read_run_info(path: str | os.PathLike) -> RunInfo | None:
    """The run's :class:`RunInfo`, or ``None`` when ``path`` has no ``run_info.json``."""
    file = Path(path).expanduser() / RUN_INFO_FILE
    return RunInfo.from_dict(_read_json(file), str(file)) if file.is_file() else None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` records (empty when there are none)."""
    from .data import json_record, jsonl_lines

    file = Path(path).expanduser() / METRICS_FILE
    return [json_record(line, src) for src, line in jsonl_lines(file)] if file.is_file() else []


def tools_path(path: str | os.PathLike | None) -> Path | None:
    """The run's ``tools.json``, or ``None`` (then the packaged CodeTether tools are the default)."""
    if path is None:
        return None
    file = Path(path).expanduser() / TOOLS_FILE
    return file if file.is_file() else None


def resolve_tools(tools: str | os.PathLike | Sequence[Mapping[str, Any]] | None,
                  run_path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The tools to use: a list as given, else that file, else the run's ``tools.json``, else CodeTether's."""
    from .tools import check_tools, load_tools

    if tools is not None and not isinstance(tools, (str, os.PathLike)):
        return check_tools(list(tools))
    return load_tools(tools if tools is not None else tools_path(run_path))


def default_report_path(model_path: str | os.PathLike) -> Path:
    """Where ``tether-tune evaluate`` writes its report for a model: inside a model directory, else here."""
    path = Path(model_path).expanduser()
    return path / EVAL_REPORT if path.is_dir() else Path(EVAL_REPORT)


def metrics_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / METRICS_FILE


def checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR


def tensorboard_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / TENSORBOARD_DIR


def write_config(out_dir: str | os.PathLike, cfg: Any) -> None:
    save_config(cfg, Path(out_dir) / CONFIG_FILE)


def write_run(out_dir: str | os.PathLike, model: Any, tokenizer: Any, tools: Sequence[Mapping[str, Any]],
              cfg: Any, info: RunInfo) -> None:
    """Everything evaluation and prediction need, next to the adapter (each file written whole or not at all)."""
    out = Path(out_dir)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    atomic_write_text(out / TOOLS_FILE, json.dumps(list(tools), indent=2) + "\n")
    write_config(out, cfg)
    write_run_info(out, info)


def write_run_info(out_dir: str | os.PathLike, info: RunInfo) -> Path:
    """(Re)write ``run_info.json`` alone, whole or not at all (``tether-tune calibrate`` updates a finished run)."""
    path = Path(out_dir) / RUN_INFO_FILE
    atomic_write_text(path, json.dumps(info.to_dict(), indent=2) + "\n")
    return path


@dataclass
class LoadedRun:
    """A model ready for inference, with what its prompts need."""

    model: Any  # in eval mode; a run's LoRA adapter merged into the base weights
    tokenizer: Any
    tools: list[dict[str, Any]]
    developer: str | None  # the developer text the run was trained with
    base_model: str  # what the model was trained from (itself for a plain model)
    info: RunInfo | None  # None for a plain model


def load_run(path: str | os.PathLike, tools: str | os.PathLike | Sequence[Mapping[str, Any]] | None = None,
             dtype: str = "auto", device: str = "auto", merge: bool = True) -> LoadedRun:
    """Load a run directory (base model + adapter, merged unless ``merge=False``; its own tokenizer, tools and
    developer text) or any other model argument (``modeling.resolve_model``) with the given or default tools.
    ``dtype`` ``auto``: ``modeling.inference_dtype`` (bf16 where the hardware computes in it)."""
    from .modeling import inference_dtype, load_model_and_tokenizer

    dtype = inference_dtype(dtype, device)
    name = os.fspath(path)
    run = Path(name).expanduser()
    info = read_run_info(run) if run.is_dir() else None
    if is_run_dir(run):
        base = info.base_model if info else _read_json(run / ADAPTER_CONFIG).get("base_model_name_or_path")
        if not base:
            raise ModelNotFoundError(f"{run}: no base model named in {RUN_INFO_FILE} or {ADAPTER_CONFIG}")
        # The tokenizer the adapter was trained with, when the run saved one (it always does).
        own_tokenizer = run if (run / TOKENIZER_FILE).is_file() else None
        model, tokenizer = load_model_and_tokenizer(base, dtype=dtype, device=device, adapter=run,
                                                    tokenizer=own_tokenizer)
        if merge:
            model = model.merge_and_unload()  # plain weights again: no LoRA matmuls at inference
            model.eval()
        base_model = str(base)
    else:
        model, tokenizer = load_model_and_tokenizer(name, dtype=dtype, device=device)
        base_model = str(info.base_model if info else name)
    return LoadedRun(model, tokenizer, resolve_tools(tools, run if run.is_dir() else None),
                     info.developer if info else None, base_model, info)

"""LoRA fine-tuning on FunctionGemma conversations, built on the Hugging Face Trainer.

What is ours: the examples (full conversation, loss on the model turn only, see ``encode.encode_example``), the
loss (logits computed only at supervised positions: the 262k-vocabulary head is most of the cost; see
``trainer``), the length limit (from the data, never a silent cut), and the per-epoch exact-call accuracy that
picks the adapter we keep. What is the Trainer's: optimisation, schedules, gradient accumulation, checkpoints,
resume, several processes (``torchrun``/``accelerate launch``: config, progress and summary come from rank 0).
The output directory's layout is ``rundir``'s.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .checks import check_example
from .config import ConfigError, is_main_process, print_config, say
from .data import Example, read_examples
from .encode import IGNORE_INDEX, Encoded, encode_example, show_supervision
from .errors import DataError, DataLengthError
from .format import MAX_NEW_TOKENS, TOOL_AND_TURN_TOKENS
from .modeling import DTYPE_HELP, check_dtype, check_model_arg
from .rundir import RunInfo, checkpoint_dir, metrics_path, write_config, write_run
from .tools import TOOLS_HELP



@dataclass
class TrainConfig:
    """LoRA fine-tuning of FunctionGemma on CodeTether tool calls."""

    train_file: str | None = field(default=None, metadata={"help": "training data (JSONL: original, messages or gold format)"})
    val_file: str | None = field(default=None, metadata={"help": "validation data: loss and exact-call accuracy per epoch"})
    output_dir: str = field(default="./finetuned_model", metadata={"help": "where the adapter, tokenizer, tools, config and metrics go"})
    model_name_or_path: str = field(
        default="google/functiongemma-270m-it",
        metadata={"help": "base model: hub id, local directory, .gguf file, or the preset gemma-3-270m-offline"},
    )
    tools: str | None = field(default=None, metadata={"help": TOOLS_HELP + "; declared in every prompt"})
    epochs: float = field(default=3.0, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=4, metadata={"help": "examples per device step"})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "steps per optimizer update (4 x 4 = 16)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of the optimizer updates spent warming up"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "learning-rate schedule after warmup (linear, cosine, constant)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "modules that get LoRA adapters"},
    )
    lora_layers_from: int = field(default=0, metadata={
        "help": "LoRA only on the layers from this one up (0-based; 0: every layer). The lower layers then need no "
                "adapter gradients: a faster step (README)"})
    trainable_tokens: list[str] = field(
        default_factory=lambda: list(TOOL_AND_TURN_TOKENS),
        metadata={"help": "tokens whose embedding rows are trained too (PEFT trainable_token_indices; tied to the "
                          "output head). The base Gemma 3 never trained FunctionGemma's tool and turn tokens; "
                          "'none' trains no embedding"},
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "refuse examples longer than this (default: the longest example; nothing is ever cut)"},
    )
    seed: int = field(default=42, metadata={"help": "seed for data order, dropout and LoRA init"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in OUTPUT_DIR/checkpoints"})
    show_example: int | None = field(default=None, metadata={"help": "print training example N with its supervised span marked, then exit"})
    eval_samples: int = field(default=32, metadata={"help": "validation examples generated each epoch for exact-call accuracy (0: loss only)"})
    eval_before: bool = field(default=True, metadata={"help": "measure validation accuracy of the base model before training"})
    max_new_tokens: int = field(default=MAX_NEW_TOKENS, metadata={"help": "generation limit when measuring accuracy"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer updates (-1: run all epochs)"})
    logging_steps: int = field(default=1, metadata={"help": "log loss every N updates"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept (the best is always kept)"})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})
    bf16: bool = field(
        default=False,
        metadata={"help": "bf16 mixed precision: matrix products in bf16 under autocast, weights, gradients and "
                          "optimizer state in fp32 (HF TrainingArguments' bf16). On CPUs with AMX or AVX512-BF16 a "
                          "step is about 1.4x faster (benchmarks/bench_train_step.py --bf16); saved adapters are fp32"},
    )
    developer: str | None = field(default=None, metadata={"help": "extra context placed before the trigger sentence in the developer turn"})
    decision_weight: float = field(default=1.0, metadata={
        "help": "loss weight of the decision tokens: the model turn's first token (a call or words) and the token "
                "after each call (another call or the end); 1 is the plain loss"})
    skip_forced: str = field(default="none", metadata={
        "choices": ["none", "schema", "grounded"],
        "help": "leave out of the loss the model-turn tokens that decoding's grammar forces: decoding appends them "
                "without asking the model, so their logits are never used. 'grounded': those of the per-request "
                "grammar prediction decodes under by default (the call syntax, and ids and words where the request "
                "leaves one choice: 3 in 4 of make main's supervised tokens); 'schema': those of plain constrained "
                "decoding (the call syntax: 1 in 3); 'none': the plain completion loss. The 262k-vocabulary head is "
                "paid per supervised token, so fewer make a faster step (README). A model trained so is meant for "
                "decoding under that grammar: it never learns the tokens the grammar supplies"})
    share_prefix: bool = field(default=True, metadata={"help": "compute the developer turn shared by a batch once (same loss and gradients, about 3x fewer tokens)"})
    prefix_grad: bool = field(default=True, metadata={
        "help": "with --share_prefix, back-propagate through the shared developer turn too; --no-prefix_grad runs it "
                "without gradient: the same loss, a gradient without the path through its keys and values, and less "
                "training time (1591 s instead of 1716 s for 312 steps at batch 8, measured)"})
    prefix_refresh: int = field(default=1, metadata={
        "help": "with --no-prefix_grad: compute the shared developer turn's keys and values once every N training "
                "batches and reuse them in between (1: every batch, the exact loss). N > 1 is an approximation: a "
                "batch sees the developer turn as adapters up to N-1 updates old computed it. It saves most of the "
                "developer turn's forward, about a fifth of a step at batch 8 (make main uses 4; README)"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the step's element-wise parts (the norms, the MLPs, the shared-prefix attention's "
                "mask and softmax; dynamic shapes): the same loss, a 1.17x faster step on the main job's batches "
                "(benchmarks/bench_train_step.py --compiled_on: 7 real batches, alternating, in one process), "
                "about 30 s of compiling once. Needs a C compiler (Inductor's CPU backend)"})
    eval_strategy: str = field(default="epoch", metadata={
        "choices": ["epoch", "no"],
        "help": "validation passes (HF TrainingArguments' eval_strategy): 'epoch' measures the validation loss and "
                "accuracy after each epoch (from --eval_delay on) and keeps the best adapter; 'no' runs none and "
                "keeps the last epoch's adapter (the validation file still calibrates). make main uses 'no': its one "
                "pass after the last epoch only reported (about 70 s), it chose nothing"})
    eval_delay: float = field(default=0, metadata={
        "help": "epochs to train before the first validation pass (HF TrainingArguments' eval_delay): the "
                "passes before it are skipped, and the adapter kept is the best of the later ones"})
    calibrate: bool = field(default=True, metadata={
        "help": "at the end, choose the call-or-words and another-call biases on the validation file (tether-tune "
                "calibrate) and store them in run_info.json; prediction applies them"})
    calibration_files: list[str] = field(default_factory=list, metadata={
        "help": "more validation examples for that calibration, beside --val_file (any format tether-tune reads, "
                "gold answers with acceptable values too: make main adds the hand-written development set "
                "eval/dev.jsonl); never a test set, never trained on"})
    strict_data: bool = field(default=False, metadata={"help": "also refuse examples whose arguments are not stated in the request"})

    def validate(self) -> None:
        if not self.train_file and self.show_example is None:
            raise ConfigError("--train_file is required")
        if self.train_file and not Path(self.train_file).exists():
            raise ConfigError(f"--train_file {self.train_file}: no such file")
        if self.val_file and not Path(self.val_file).exists():
            raise ConfigError(f"--val_file {self.val_file}: no such file")
        for path in self.calibration_files:
            if not Path(path).is_file():
                raise ConfigError(f"--calibration_files {path}: no such file")
        for name in ("batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if not self.learning_rate > 0:
            raise ConfigError("--learning_rate must be positive")
        if not self.decision_weight > 0:
            raise ConfigError("--decision_weight must be positive (1: the plain loss)")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError("--warmup_ratio must be in [0, 1)")
        if not self.epochs > 0:
            raise ConfigError("--epochs must be positive")
        if self.eval_strategy == "epoch" and not 0 <= self.eval_delay < self.epochs:
            raise ConfigError(f"--eval_delay {self.eval_delay}: must be at least 0 and below --epochs "
                              f"({self.epochs}), or no validation pass would run")
        if self.skip_forced != "none" and self.decision_weight != 1.0:
            raise ConfigError(f"--decision_weight {self.decision_weight} finds the decision tokens by their place "
                              f"after the prompt or a call, which --skip_forced {self.skip_forced} moves: use one "
                              "of the two")
        if self.prefix_refresh < 1:
            raise ConfigError(f"--prefix_refresh {self.prefix_refresh}: must be at least 1 (1: every batch)")
        if self.prefix_refresh > 1 and (self.prefix_grad or not self.share_prefix):
            raise ConfigError(f"--prefix_refresh {self.prefix_refresh} reuses the shared developer turn computed "
                              "without gradient: add --share_prefix --no-prefix_grad, or use --prefix_refresh 1")
        if self.max_seq_length is not None and self.max_seq_length < 16:
            raise ConfigError("--max_seq_length is far too small")
        if self.lora_layers_from < 0:
            raise ConfigError(f"--lora_layers_from {self.lora_layers_from}: must be 0 or more")
        if not self.lora_target_modules:
            raise ConfigError("--lora_target_modules needs at least one module name")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora_dropout {self.lora_dropout}: must be in [0, 1)")
        if self.eval_samples < 0 or self.max_new_tokens < 1:
            raise ConfigError("--eval_samples must be 0 or more and --max_new_tokens at least 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"--max_steps {self.max_steps}: give a positive number, or -1 for all epochs")
        if self.tools and not Path(self.tools).is_file():
            raise ConfigError(f"--tools {self.tools}: no such file")
        check_model_arg("--model_name_or_path", self.model_name_or_path)
        check_dtype(self.dtype)


def trainable_token_ids(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    """Ids of ``--trainable_tokens`` (each must be one token of the vocabulary)."""
    if list(tokens) in ([], ["none"]):
        return []
    ids = []
    for t in tokens:
        enc = tokenizer(t, add_special_tokens=False).input_ids
        if len(enc) != 1:
            raise ConfigError(f"--trainable_tokens: {t!r} is not a single token of this tokenizer ({len(enc)} pieces)")
        ids.append(enc[0])
    return ids


# --------------------------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------------------------


def load_training_examples(path: str, tools: Sequence[dict], strict_grounding: bool) -> list[Example]:
    """Read a data file for training; every problem is reported (file:line) and any schema error stops the run."""
    examples, errors = read_examples(path, strict=False)
    problems = [str(e) for e in errors]
    warnings = []
    for ex in examples:
        if not ex.calls and ex.text is None:
            problems.append(f"{ex.source}: a no-call example without a text answer cannot be trained on")
        for p in check_example(ex, tools, grounding=True):
            is_grounding = "request" in p
            (warnings if is_grounding and not strict_grounding else problems).append(f"{ex.source}: {p}")
    if warnings:
        say(f"warning: {len(warnings)} arguments not stated in their request (e.g. {warnings[0]}); "
            "--strict_data refuses them")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(path, None, f"{len(problems)} problems; fix them (or run `tether-tune validate {path}`):\n  {shown}{more}")
    if not examples:
        raise DataError(path, None, "no examples")
    return examples


def encode_all(tokenizer: Any, examples: Sequence[Example], tools: Sequence[dict], developer: str | None) -> list[Encoded]:
    out = []
    for ex in examples:
        if developer and not ex.developer:
            ex.developer = developer
        out.append(encode_example(tokenizer, ex, tools))
    return out


def check_lengths(encoded: Sequence[Encoded], examples: Sequence[Example], limit: int | None) -> int:
    """The length limit: the longest example unless the user set one, in which case a longer example stops the
    run with its source, its length and the limit (a cut target would teach the model to stop mid-call)."""
    longest = max(len(e.input_ids) for e in encoded)
    if limit is None:
        return longest
    too_long = [(len(e.input_ids), ex.source) for e, ex in zip(encoded, examples) if len(e.input_ids) > limit]
    if too_long:
        n, src = max(too_long)
        raise DataLengthError(
            f"{len(too_long)} examples are longer than --max_seq_length {limit}; the longest is {src} with {n} tokens "
            f"(the developer turn with the tool declarations alone is most of that). Raise --max_seq_length to at "
            f"least {longest} or leave it unset; examples are never truncated."
        )
    return limit


def mask_audit(encoded: Sequence[Encoded], examples: Sequence[Example]) -> dict[str, float]:
    """Share of supervised tokens, and a hard stop if any example has nothing to learn."""
    empty = [ex.source for e, ex in zip(encoded, examples) if e.n_supervised == 0]
    if empty:
        raise DataError(empty[0], None, f"{len(empty)} examples have no supervised token")
    total = sum(len(e.input_ids) for e in encoded)
    supervised = sum(e.n_supervised for e in encoded)
    stats = {
        "examples": len(encoded),
        "tokens": total,
        "supervised_tokens": supervised,
        "supervised_share": supervised / total,
        "min_supervised": min(e.n_supervised for e in encoded),
        "max_length": max(len(e.input_ids) for e in encoded),
    }
    say(f"mask audit: {stats['examples']} examples, {total} tokens, {supervised} supervised "
        f"({stats['supervised_share']:.1%}); every example has {stats['min_supervised']}+ supervised tokens")
    return stats


@dataclass
class Prepared:
    """The run's data, encoded, with the length limit and the mask audit."""

    tools: list[dict]
    train_examples: list[Example]
    train_enc: list[Encoded]
    val_examples: list[Example]
    val_enc: list[Encoded]
    limit: int = 0
    audit: dict[str, float] = field(default_factory=dict)
    calibration_examples: list[Example] = field(default_factory=list)  # --calibration_files: calibration only


def prepare_data(cfg: TrainConfig, tokenizer: Any, tools: list[dict]) -> Prepared:
    train_examples = load_training_examples(cfg.train_file, tools, cfg.strict_data) if cfg.train_file else []
    val_examples = load_training_examples(cfg.val_file, tools, cfg.strict_data) if cfg.val_file else []
    from .calibrate import read_calibration_files

    # Read now, so that a bad file stops the run before training, not after it.
    calibration = read_calibration_files(cfg.calibration_files)
    train_enc = encode_all(tokenizer, train_examples, tools, cfg.developer)
    val_enc = encode_all(tokenizer, val_examples, tools, cfg.developer)
    if cfg.skip_forced != "none":
        from .constrain import ToolCallConstraint

        constraint = ToolCallConstraint(tokenizer, tools, grounded=cfg.skip_forced == "grounded")
        before = sum(e.n_supervised for e in train_enc)
        train_enc, val_enc = skip_forced(train_enc, train_examples, constraint), skip_forced(val_enc, val_examples, constraint)
        after = sum(e.n_supervised for e in train_enc)
        say(f"--skip_forced {cfg.skip_forced}: {before - after} of the training set's {before} model-turn tokens are "
            f"forced by the grammar and left out of the loss ({(before - after) / max(before, 1):.0%})")
    return Prepared(tools, train_examples, train_enc, val_examples, val_enc, calibration_examples=calibration)


def skip_forced(encoded: Sequence[Encoded], examples: Sequence[Example], constraint: Any) -> list[Encoded]:
    """``--skip_forced``: each example with the model-turn tokens ``constraint`` forces (``ToolCallConstraint.forced``,
    grounded in the example's request) taken out of the loss (their labels ignored); the rest as it was. The model
    turn's first token is never forced (a call or words), so every example keeps a supervised token. An example
    with tools of its own keeps its whole model turn (the grammar is the run's tools')."""
    out = []
    for enc, ex in zip(encoded, examples):
        if ex.tools and list(ex.tools) != list(constraint.tools):
            out.append(enc)
            continue
        at = [i for i, y in enumerate(enc.labels) if y != IGNORE_INDEX]  # the model turn, in order
        forced = constraint.forced(ex.request, [enc.labels[i] for i in at])
        labels = list(enc.labels)
        for i, skip in zip(at, forced):
            if skip:
                labels[i] = IGNORE_INDEX
        out.append(replace(enc, labels=labels))
    return out


def show_example(data: Prepared, tokenizer: Any, n: int) -> int:
    """``--show_example N``: example N with its supervised span between ⟦ ⟧."""
    if not 0 <= n < len(data.train_enc):
        raise ConfigError(f"--show_example {n}: the file has {len(data.train_enc)} examples (0-based)")
    enc = data.train_enc[n]
    print(f"# {data.train_examples[n].source}: {len(enc.input_ids)} tokens, {enc.n_supervised} supervised "
          "(between ⟦ and ⟧)")
    print(show_supervision(tokenizer, enc))
    return 0


def prepare_output_dir(cfg: TrainConfig) -> Path:
    """Check ``--resume`` has a checkpoint; otherwise clear the last run's metrics and checkpoints (rank 0)."""
    out_dir = Path(cfg.output_dir)
    ckpt_dir = checkpoint_dir(out_dir)
    if cfg.resume:
        from transformers.trainer_utils import get_last_checkpoint

        if not ckpt_dir.is_dir() or get_last_checkpoint(str(ckpt_dir)) is None:
            raise ConfigError(f"--resume: no checkpoint in {ckpt_dir}; run without --resume to start")
    elif is_main_process():
        metrics_path(out_dir).unlink(missing_ok=True)
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output_dir {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        write_config(out_dir, cfg)
    return out_dir


def add_lora(cfg: TrainConfig, model: Any, tokenizer: Any) -> Any:
    """LoRA on ``--lora_target_modules``, plus the embedding rows of ``--trainable_tokens`` (tied head)."""
    from peft import LoraConfig, get_peft_model

    from .trainer import sparse_trainable_tokens

    token_ids = trainable_token_ids(tokenizer, cfg.trainable_tokens)
    n_layers = int(model.config.get_text_config().num_hidden_layers)
    if cfg.lora_layers_from >= n_layers:
        raise ConfigError(f"--lora_layers_from {cfg.lora_layers_from}: the model has {n_layers} layers (0-based)")
    layers = list(range(cfg.lora_layers_from, n_layers)) if cfg.lora_layers_from else None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM",
                      layers_to_transform=layers, trainable_token_indices=token_ids or None)
    try:
        model = get_peft_model(model, lora)
    except ValueError as err:  # PEFT's words for a target module the model does not have
        raise ConfigError(f"--lora_target_modules {' '.join(cfg.lora_target_modules)}: {err}") from None
    sparse_trainable_tokens(model)
    trainable, total = model.get_nb_trainable_parameters()
    say(f"LoRA: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")
    return model


def accuracy_before(cfg: TrainConfig, model: Any, probe: Any) -> float | None:
    """Exact-call accuracy of the base model on the validation sample (rank 0; the others need not wait)."""
    if not (cfg.eval_before and probe is not None and not cfg.resume and is_main_process()):
        return None
    t = time.perf_counter()
    acc = probe(model)
    say(f"base model: exact-call accuracy {acc:.3f} on {len(probe.examples)} validation examples "
        f"({time.perf_counter() - t:.0f} s)")
    return acc


def fill_results(info: RunInfo, trainer: Any, seconds: float) -> None:
    """What the run measured, from the Trainer's log history."""
    history = trainer.state.log_history
    info.train_seconds = round(seconds, 1)
    info.global_steps = trainer.state.global_step
    info.train_tokens = trainer.counter["tokens"]
    info.train_batches = trainer.counter["batches"]
    info.shared_prefix_batches = trainer.counter["shared_prefix_batches"]
    info.val_exact_call_accuracy_per_epoch = [h["eval_exact_call_accuracy"] for h in history if "eval_exact_call_accuracy" in h]
    info.val_exact_call_accuracy_best = max(info.val_exact_call_accuracy_per_epoch, default=None)
    info.val_loss_per_epoch = [h["eval_loss"] for h in history if "eval_loss" in h]
    info.best_checkpoint = trainer.state.best_model_checkpoint


def calibrate_decisions(cfg: TrainConfig, model: Any, tokenizer: Any, tools: Sequence[dict],
                        examples: Sequence[Example], info: RunInfo) -> None:
    """Choose the call-or-words and another-call-or-end biases on ``examples`` (the validation file's and those of
    ``--calibration_files``), under the grounded grammar (``calibrate.py``)."""
    from .calibrate import calibrate_run_info
    from .predict import Predictor
    from .trainer import inference_copy

    predictor = Predictor(inference_copy(model), tokenizer, tools, developer=cfg.developer, grounded=True)
    files = [f for f in [cfg.val_file, *cfg.calibration_files] if f]
    say(calibrate_run_info(info, predictor, examples, files))


def _wait_for_rank_0() -> None:
    """Under torchrun, the other ranks wait here while rank 0 calibrates and writes the run: a rank that exits
    while rank 0 still holds the process group aborts the launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_train(cfg: TrainConfig) -> int:
    """Fine-tune; write the run directory (``rundir``). Returns 0, 130 when interrupted, 1 on a diverging loss."""
    cfg.validate()
    print_config(cfg)
    from transformers import set_seed

    from .modeling import load_model_and_tokenizer, resolve_model
    from .tools import load_tools
    from .trainer import AccuracyProbe, build_trainer, compile_step, sample_examples, uncompile_step

    set_seed(cfg.seed)
    tools = load_tools(cfg.tools)
    base = resolve_model(cfg.model_name_or_path)
    model, tokenizer = load_model_and_tokenizer(base, dtype=cfg.dtype)
    data = prepare_data(cfg, tokenizer, tools)
    if cfg.show_example is not None:
        return show_example(data, tokenizer, cfg.show_example)
    limit = check_lengths(data.train_enc + data.val_enc, data.train_examples + data.val_examples, cfg.max_seq_length)
    info = RunInfo(base_model=base, base_model_name=cfg.model_name_or_path, developer=cfg.developer,
                   max_seq_length=limit, mask_audit=mask_audit(data.train_enc, data.train_examples),
                   world_size=int(os.environ.get("WORLD_SIZE", "1")))
    if not data.val_examples:
        say("warning: no --val_file: no validation loss or accuracy, the last epoch's adapter is kept")
    elif cfg.eval_strategy == "no":
        say("--eval_strategy no: no validation pass, the last epoch's adapter is kept; the validation file calibrates")
    out_dir = prepare_output_dir(cfg)
    probe = None
    if data.val_examples and cfg.eval_samples > 0:
        probe = AccuracyProbe(tokenizer, sample_examples(data.val_examples, cfg.eval_samples, cfg.seed), tools,
                              cfg.max_new_tokens, cfg.developer)
    info.val_exact_call_accuracy_before = accuracy_before(cfg, model, probe)

    model = add_lora(cfg, model, tokenizer)
    if cfg.compile:
        say(f"--compile: {compile_step(model)} modules of the step compile at its first steps (about 30 s)")
    trainer = build_trainer(cfg, model, tokenizer, data.train_enc, data.val_enc, probe, out_dir)
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    except KeyboardInterrupt:
        # Leave a usable, resumable checkpoint and the adapter as it stands.
        trainer._save_checkpoint(trainer.model, trial=None)
        info.interrupted_at_step = trainer.state.global_step
        if is_main_process():
            write_run(out_dir, trainer.model, tokenizer, tools, cfg, info)
        say(f"\ninterrupted at step {trainer.state.global_step}: adapter saved in {out_dir}, checkpoint in "
            f"{checkpoint_dir(out_dir)}; continue with --resume")
        return 130
    except FloatingPointError as err:  # raised by compute_loss on a NaN/inf loss
        say(f"error: {err}")
        return 1
    fill_results(info, trainer, time.perf_counter() - t0)
    uncompile_step(trainer.model)
    calibration = data.val_examples + data.calibration_examples
    if cfg.calibrate and calibration and is_main_process():
        calibrate_decisions(cfg, trainer.model, tokenizer, tools, calibration, info)
    if is_main_process():
        write_run(out_dir, trainer.model, tokenizer, tools, cfg, info)
    _wait_for_rank_0()
    summary = {k: v for k, v in info.to_dict().items() if k in (
        "train_seconds", "global_steps", "val_exact_call_accuracy_before", "val_exact_call_accuracy_per_epoch",
        "val_loss_per_epoch")}
    say(f"done: adapter in {out_dir}; {json.dumps(summary)}")
    return 0

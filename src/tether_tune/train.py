"""LoRA fine-tuning on FunctionGemma conversations, built on the Hugging Face Trainer.

What is ours: the examples (full conversation, loss on the model turn only, see ``data.encode_example``), the loss
(logits computed only at supervised positions: the 262k-vocabulary head is most of the cost), the length limit
(from the data, never a silent cut), and the per-epoch exact-call accuracy that picks the adapter we keep.
What is the Trainer's: optimisation, schedules, gradient accumulation, checkpoints, resume, multi-GPU.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, atomic_write_text, print_config, save_config
from .data import IGNORE_INDEX, DataError, Encoded, Example, check_example, encode_example, read_examples, show_supervision

#: FunctionGemma's tool tokens and the turn tokens: untrained in the base Gemma 3 (ids 46-52 were unused).
TOOL_TOKENS = (
    "<start_function_declaration>", "<end_function_declaration>", "<start_function_call>", "<end_function_call>",
    "<start_function_response>", "<end_function_response>", "<escape>", "<start_of_turn>", "<end_of_turn>",
)
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
TOOLS_FILE = "tools.json"
CONFIG_FILE = "train_config.json"


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
    tools: str = field(default="codetether_tools.json", metadata={"help": "tools file declared in every prompt"})
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
    trainable_tokens: list[str] = field(
        default_factory=lambda: list(TOOL_TOKENS),
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
    max_new_tokens: int = field(default=128, metadata={"help": "generation limit when measuring accuracy"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer updates (-1: run all epochs)"})
    logging_steps: int = field(default=1, metadata={"help": "log loss every N updates"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept (the best is always kept)"})
    dtype: str = field(default="auto", metadata={"help": "auto (fp32 on CPU, bf16 on GPU), float32 or bfloat16", "choices": ["auto", "float32", "bfloat16"]})
    developer: str | None = field(default=None, metadata={"help": "extra context placed before the trigger sentence in the developer turn"})
    share_prefix: bool = field(default=True, metadata={"help": "compute the developer turn shared by a batch once (same loss, about 3x fewer tokens; off under multi-GPU)"})
    strict_data: bool = field(default=False, metadata={"help": "also refuse examples whose arguments are not stated in the request"})

    def validate(self) -> None:
        if not self.train_file and self.show_example is None:
            raise ConfigError("--train_file is required")
        if self.train_file and not Path(self.train_file).exists():
            raise ConfigError(f"--train_file {self.train_file}: no such file")
        if self.val_file and not Path(self.val_file).exists():
            raise ConfigError(f"--val_file {self.val_file}: no such file")
        for name in ("batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if not self.learning_rate > 0:
            raise ConfigError("--learning_rate must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError("--warmup_ratio must be in [0, 1)")
        if not self.epochs > 0:
            raise ConfigError("--epochs must be positive")
        if self.max_seq_length is not None and self.max_seq_length < 16:
            raise ConfigError("--max_seq_length is far too small")
        if not self.lora_target_modules:
            raise ConfigError("--lora_target_modules needs at least one module name")


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


class DataLengthError(ValueError):
    """An example does not fit the length limit; we refuse rather than cut it."""


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
        print(f"warning: {len(warnings)} arguments not stated in their request (e.g. {warnings[0]}); "
              "--strict_data refuses them", file=sys.stderr)
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
    print(
        f"mask audit: {stats['examples']} examples, {total} tokens, {supervised} supervised "
        f"({stats['supervised_share']:.1%}); every example has {stats['min_supervised']}+ supervised tokens",
        file=sys.stderr,
    )
    return stats


@dataclass
class PadCollator:
    """Pads a batch to its longest example (right side); padding is masked out of attention and loss.

    With ``share_prefix``, when every example of the batch starts with the same developer turn (the usual case:
    same tools, same developer text), that prefix is sent once as ``prefix_ids`` (1, P) and only the rest of each
    example is padded into ``input_ids`` (B, S): see :func:`shared_prefix_loss`.
    """

    pad_id: int
    share_prefix: bool = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        p = features[0].get("prefix_len", 0)
        shared = (
            self.share_prefix
            and p > 0
            and all(f.get("prefix_len") == p and f["input_ids"][:p] == features[0]["input_ids"][:p] for f in features)
            and all(y == IGNORE_INDEX for f in features for y in f["labels"][:p])
        )
        cut = p if shared else 0
        rows = [(f["input_ids"][cut:], f["labels"][cut:]) for f in features]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row_ids, row_labels) in enumerate(rows):
            ids[i, : len(row_ids)] = torch.tensor(row_ids)
            labels[i, : len(row_labels)] = torch.tensor(row_labels)
            mask[i, : len(row_ids)] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if shared:
            batch["prefix_ids"] = torch.tensor([features[0]["input_ids"][:p]], dtype=torch.long)
        return batch


def _loss_from_logits(logits: Any, targets: Any, num_items: Any) -> tuple[Any, int]:
    import torch
    import torch.nn.functional as F

    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
    n = int(targets.numel())
    denom = num_items if num_items is not None else max(n, 1)
    if torch.is_tensor(denom):
        denom = denom.to(loss.device)
    return loss / denom, n


def _next_token_keep(labels: Any) -> tuple[Any, Any]:
    """``keep[b, t]`` is True when position t predicts a supervised token t+1; returns (keep, targets (N,))."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)  # (B, T)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep, labels[:, 1:][keep[:, :-1]]


def supervised_loss(model: Any, batch: dict[str, Any], num_items: Any = None) -> tuple[Any, int]:
    """Cross-entropy on the model turn only, with logits computed only where there is a label.

    The model's ``logits_to_keep`` takes the boolean (batch, seq) mask of positions whose next token is supervised
    and returns logits of shape (n_supervised, vocab) instead of (batch, seq, vocab): the 262k-entry head is most
    of a step's cost. Returns (loss, number of supervised tokens). With ``num_items`` (the Trainer's count over all
    accumulated micro-batches) the sum is divided by it, so gradient accumulation weighs every token equally.
    """
    if "prefix_ids" in batch:
        return shared_prefix_loss(model, batch, num_items)
    keep, targets = _next_token_keep(batch["labels"])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep, use_cache=False)
    return _loss_from_logits(out.logits, targets, num_items)


def shared_prefix_loss(model: Any, batch: dict[str, Any], num_items: Any = None) -> tuple[Any, int]:
    """The same loss as :func:`supervised_loss` on the full sequences, computing the shared prefix once.

    The developer turn (P ≈ 675 tokens with the 8 declarations) is run once, with gradient, into a KV cache of
    shape (1, heads, P, head_dim) per layer; the cache is broadcast to the batch (no copy) and each example's own
    tokens (S ≈ 40) attend to it. A batch of B costs P + B·S tokens instead of B·(P + S). The prefix carries no
    loss, and the gradient still flows into it through the cache.
    """
    import torch

    prefix = batch["prefix_ids"]  # (1, P)
    ids, mask = batch["input_ids"], batch["attention_mask"]  # (B, S)
    b, s = ids.shape
    p = prefix.shape[1]
    out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, logits_to_keep=1)
    cache = out.cache
    for layer in cache.layers:
        layer.keys = layer.keys.expand(b, -1, -1, -1)  # (B, heads, P, head_dim), a view
        layer.values = layer.values.expand(b, -1, -1, -1)
    full_mask = torch.cat([torch.ones((b, p), dtype=mask.dtype, device=mask.device), mask], dim=1)  # (B, P+S)
    positions = torch.arange(p, p + s, device=ids.device).unsqueeze(0).expand(b, s)
    keep, targets = _next_token_keep(batch["labels"])
    out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, cache=cache,
                use_cache=True, logits_to_keep=keep)
    return _loss_from_logits(out.logits, targets, num_items)


# --------------------------------------------------------------------------------------------------------------
# Accuracy during training
# --------------------------------------------------------------------------------------------------------------


def exact_call_accuracy(model: Any, tokenizer: Any, examples: Sequence[Example], tools: Sequence[dict],
                        max_new_tokens: int, developer: str | None = None) -> float:
    """Greedy outputs (the prefix-cached predictor, unconstrained: we measure the model, not the grammar) scored
    by ``evaluate.score``, the same scoring as ``tether-tune evaluate``."""
    import torch

    from .evaluate import score
    from .predict import Predictor

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            predictor = Predictor(model, tokenizer, tools, developer=developer, constrained=False, max_new_tokens=max_new_tokens)
            outputs = [p.raw for p in predictor.predict_batch([ex.request for ex in examples])]
    finally:
        model.train(was_training)
    return float(score(list(examples), outputs, tools)["exact_call_accuracy"])


def _sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    if n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(list(examples), n)


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def build_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, train_enc: list[Encoded], val_enc: list[Encoded],
                  val_examples: list[Example], tools: list[dict], out_dir: Path) -> Any:
    import torch
    from transformers import ProgressCallback, Trainer, TrainingArguments

    from .modeling import pick_device, pick_dtype

    try:
        import tensorboard  # noqa: F401

        report_to: list[str] = ["tensorboard"]
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out_dir / "tensorboard"))
    except ImportError:
        report_to = []

    has_val = bool(val_enc)
    # Two forwards per step (prefix, then the rest) do not mix with DistributedDataParallel's gradient hooks.
    share_prefix = cfg.share_prefix and int(os.environ.get("WORLD_SIZE", "1")) == 1
    select_by_accuracy = has_val and cfg.eval_samples > 0
    args = TrainingArguments(
        output_dir=str(out_dir / CHECKPOINT_DIR),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total updates
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        eval_strategy="epoch" if has_val else "no",
        save_strategy="epoch",
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_exact_call_accuracy" if select_by_accuracy else "eval_loss",
        greater_is_better=select_by_accuracy,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=pick_dtype(cfg.dtype, pick_device("auto")) == torch.bfloat16,
        report_to=report_to,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        save_only_model=False,
        use_cpu=not torch.cuda.is_available(),
        prediction_loss_only=True,
    )

    counter = {"tokens": 0, "supervised": 0}

    class CallTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, n = supervised_loss(model, inputs, num_items_in_batch)
            if model.training:  # tokens of the examples (a shared prefix counts once per example it serves)
                prefix = inputs["prefix_ids"].shape[1] * inputs["input_ids"].shape[0] if "prefix_ids" in inputs else 0
                counter["tokens"] += int(inputs["attention_mask"].sum()) + prefix
                counter["supervised"] += n
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at step {self.state.global_step}; lower --learning_rate "
                    f"(now {cfg.learning_rate}) or check the data. The last checkpoint is in {args.output_dir}."
                )
            return (loss, {}) if return_outputs else loss  # no logits kept: eval needs only the loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if select_by_accuracy:
                sample = _sample(val_examples, cfg.eval_samples, cfg.seed)
                acc = exact_call_accuracy(self.model, tokenizer, sample, tools, cfg.max_new_tokens, cfg.developer)
                metrics[f"{metric_key_prefix}_exact_call_accuracy"] = acc
                self.log({f"{metric_key_prefix}_exact_call_accuracy": acc, f"{metric_key_prefix}_accuracy_n": len(sample)})
            return metrics

    class Progress(ProgressCallback):
        """The Trainer's bar (steps, ETA) with loss, learning rate and tokens/s on it; logs also as JSON lines."""

        def on_train_begin(self, a, state, control, **kw):
            super().on_train_begin(a, state, control, **kw)
            self.t0, self.tok0 = time.perf_counter(), counter["tokens"]

        def on_log(self, a, state, control, logs=None, **kw):
            logs = dict(logs or {})
            record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **logs}
            with open(out_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            if self.training_bar is None or not state.is_world_process_zero:
                return
            rate = (counter["tokens"] - self.tok0) / max(time.perf_counter() - self.t0, 1e-9)
            post = {"tok/s": f"{rate:.0f}"}
            if "loss" in logs:
                post["loss"] = f"{logs['loss']:.4f}"
            if "learning_rate" in logs:
                post["lr"] = f"{logs['learning_rate']:.2e}"
            self.training_bar.set_postfix(post, refresh=True)
            if any(k.startswith("eval_") for k in logs):
                self.training_bar.write(
                    "epoch {:.2f}: ".format(state.epoch or 0)
                    + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
                )

    def as_rows(enc: list[Encoded]) -> list[dict[str, Any]]:
        return [{"input_ids": e.input_ids, "labels": e.labels, "prefix_len": e.prefix_len} for e in enc]

    trainer = CallTrainer(
        model=model,
        args=args,
        train_dataset=as_rows(train_enc),
        eval_dataset=as_rows(val_enc) if has_val else None,
        data_collator=PadCollator(tokenizer.pad_token_id, share_prefix=share_prefix),
        processing_class=tokenizer,
    )
    trainer.model_accepts_loss_kwargs = True  # our compute_loss uses num_items_in_batch
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(Progress())
    trainer.counter = counter
    return trainer


def _write_outputs(out_dir: Path, model: Any, tokenizer: Any, tools: list[dict], cfg: TrainConfig, info: dict) -> None:
    """Everything evaluation and prediction need, next to the adapter."""
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    atomic_write_text(out_dir / TOOLS_FILE, json.dumps(tools, indent=2) + "\n")
    save_config(cfg, out_dir / CONFIG_FILE)
    atomic_write_text(out_dir / RUN_INFO_FILE, json.dumps(info, indent=2) + "\n")


def run_train(cfg: TrainConfig) -> int:
    print_config(cfg)
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from .modeling import load_model_and_tokenizer, resolve_model
    from .tools import load_tools

    set_seed(cfg.seed)
    tools = load_tools(cfg.tools)
    base = resolve_model(cfg.model_name_or_path)
    model, tokenizer = load_model_and_tokenizer(base, dtype=cfg.dtype)

    train_examples = load_training_examples(cfg.train_file, tools, cfg.strict_data) if cfg.train_file else []
    train_enc = encode_all(tokenizer, train_examples, tools, cfg.developer)
    if cfg.show_example is not None:
        if not 0 <= cfg.show_example < len(train_enc):
            raise ConfigError(f"--show_example {cfg.show_example}: the file has {len(train_enc)} examples (0-based)")
        enc = train_enc[cfg.show_example]
        print(f"# {train_examples[cfg.show_example].source}: {len(enc.input_ids)} tokens, "
              f"{enc.n_supervised} supervised (between ⟦ and ⟧)")
        print(show_supervision(tokenizer, enc))
        return 0
    val_examples = load_training_examples(cfg.val_file, tools, cfg.strict_data) if cfg.val_file else []
    val_enc = encode_all(tokenizer, val_examples, tools, cfg.developer)
    limit = check_lengths(train_enc + val_enc, train_examples + val_examples, cfg.max_seq_length)
    audit = mask_audit(train_enc, train_examples)
    if not val_examples:
        print("warning: no --val_file: no validation loss or accuracy, the last epoch's adapter is kept", file=sys.stderr)

    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    if cfg.resume:
        from transformers.trainer_utils import get_last_checkpoint

        if not ckpt_dir.is_dir() or get_last_checkpoint(str(ckpt_dir)) is None:
            raise ConfigError(f"--resume: no checkpoint in {ckpt_dir}; run without --resume to start")
    else:
        if (out_dir / METRICS_FILE).exists():
            (out_dir / METRICS_FILE).unlink()
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / CONFIG_FILE)

    info: dict[str, Any] = {"base_model": base, "base_model_name": cfg.model_name_or_path, "developer": cfg.developer,
                            "max_seq_length": limit, "mask_audit": audit}
    if cfg.eval_before and val_examples and cfg.eval_samples > 0 and not cfg.resume:
        sample = _sample(val_examples, cfg.eval_samples, cfg.seed)
        t = time.perf_counter()
        info["val_exact_call_accuracy_before"] = exact_call_accuracy(model, tokenizer, sample, tools, cfg.max_new_tokens,
                                                                     cfg.developer)
        print(f"base model: exact-call accuracy {info['val_exact_call_accuracy_before']:.3f} on {len(sample)} "
              f"validation examples ({time.perf_counter() - t:.0f} s)", file=sys.stderr)

    token_ids = trainable_token_ids(tokenizer, cfg.trainable_tokens)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM",
                      trainable_token_indices=token_ids or None)
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    print(f"LoRA: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})", file=sys.stderr)

    trainer = build_trainer(cfg, model, tokenizer, train_enc, val_enc, val_examples, tools, out_dir)
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    except KeyboardInterrupt:
        # Leave a usable, resumable checkpoint and the adapter as it stands.
        trainer._save_checkpoint(trainer.model, trial=None)
        info["interrupted_at_step"] = trainer.state.global_step
        _write_outputs(out_dir, trainer.model, tokenizer, tools, cfg, info)
        print(f"\ninterrupted at step {trainer.state.global_step}: adapter saved in {out_dir}, checkpoint in "
              f"{ckpt_dir}; continue with --resume", file=sys.stderr)
        return 130
    except FloatingPointError as err:  # raised by compute_loss on a NaN/inf loss
        print(f"error: {err}", file=sys.stderr)
        return 1
    info["train_seconds"] = round(time.perf_counter() - t0, 1)
    info["global_steps"] = trainer.state.global_step
    info["train_tokens"] = trainer.counter["tokens"]
    history = trainer.state.log_history
    accs = [h["eval_exact_call_accuracy"] for h in history if "eval_exact_call_accuracy" in h]
    losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    if accs:
        info["val_exact_call_accuracy_per_epoch"] = accs
        info["val_exact_call_accuracy_best"] = max(accs)
    if losses:
        info["val_loss_per_epoch"] = losses
    info["best_checkpoint"] = trainer.state.best_model_checkpoint
    _write_outputs(out_dir, trainer.model, tokenizer, tools, cfg, info)
    summary = {k: info[k] for k in ("train_seconds", "global_steps", "val_exact_call_accuracy_before",
                                     "val_exact_call_accuracy_per_epoch", "val_loss_per_epoch") if k in info}
    print(f"done: adapter in {out_dir}; {json.dumps(summary)}", file=sys.stderr)
    return 0

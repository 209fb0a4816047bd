"""One training step (forward + backward, LoRA r16 on q/k/v/o), naive vs ours, same batch, same process.

    python benchmarks/bench_train_step.py                       # the real 270M (offline preset), batch 4
    python benchmarks/bench_train_step.py --model DIR --repeats 2

- naive: what the original script did — every position's 262k-vocabulary logits, every example padded to a
  fixed length (the original's 512 cannot hold one example with the 8 declarations, so --naive_length, 1024);
- logits-only: logits only where the loss is, padded to the longest example of the batch;
- ours: logits-only plus the shared developer turn computed once per batch (the default in `tether-tune train`).

Prints the median seconds per step of each and the ratios. The losses are printed too: all three must agree.

    python benchmarks/bench_train_step.py --levers              # the main job's step, each lever in turn

With ``--levers``, the step the main job takes (bf16 frozen base, LoRA r16 on q/k/v/o plus the tool and turn token
rows, bf16 autocast, batch 8, shared developer turn without gradient), from the path before each of the step's
levers to ours, each keeping the ones above it:
- before: PEFT's trainable-token layers, ``F.cross_entropy``, the developer turn through the whole model;
- + the developer turn through the decoder alone (no output head: it has no loss);
- + trainable-token rows only (``trainer.sparse_trainable_tokens``);
- + ``trainer.RowCrossEntropy``;
- + ``trainer.shared_prefix_attention`` (the batch's queries meet the shared prefix's keys in one product);
- + ``trainer.compile_step`` (``--compile``: the norms, MLPs and attention core compiled);
- + the logits kept in bf16: ``CallTrainer``'s own autocast instead of accelerate's ``--bf16``, which converts the
  forward's outputs to fp32 (the lines above run with that conversion) = ours, what the main job trains with.

    python benchmarks/bench_train_step.py --compiled_on runs/main/data/codetether.train.jsonl
    python benchmarks/bench_train_step.py --skip_forced_on runs/main/data/codetether.train.jsonl

With ``--compiled_on``, the main job's step plain and compiled (``--compile``) on real training batches from the
shortest to the longest, alternating, and their ratio: the one-batch ``--levers`` line flatters compilation
(its batch is short, where the element-wise share of a step is largest). A third timing per batch is the compiled
step with the developer turn reused (``--prefix_refresh``, 4: computed every 4th batch, as the main job trains).

With ``--skip_forced_on``, that last step (compiled, developer turn reused) on the same real batches with the whole
model turn in the loss and with the tokens the grounded grammar forces left out (``--skip_forced grounded``: fewer
rows through the 262k-vocabulary head), alternating, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from types import MethodType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tether_tune.data import Example  # noqa: E402
from tether_tune.encode import IGNORE_INDEX, encode_example  # noqa: E402
from tether_tune.format import Call  # noqa: E402
from tether_tune.tools import load_tools  # noqa: E402
from tether_tune.trainer import PadCollator, as_rows, supervised_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def batch_examples(n: int) -> list[Example]:
    ids = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(n)]
    pool = [
        lambda u: Example(f"cancel task {u} please", [Call("cancel_task", {"task_id": u})]),
        lambda u: Example("create a task to fix the login redirect loop priority 8",
                          [Call("create_task", {"title": "fix the login redirect loop", "priority": 8})]),
        lambda u: Example("tell the code-reviewer to look at the upload endpoint",
                          [Call("send_message", {"agent_name": "code-reviewer", "message": "look at the upload endpoint"})]),
        lambda u: Example(f"give me a recap of session {u}", [Call("playback_session", {"session_id": u, "style": "summary"})]),
    ]
    return [pool[i % len(pool)](ids[i]) for i in range(n)]


def naive_loss(model, rows, pad_id: int, length: int):
    """Full logits at every position of sequences padded to a fixed length (mean over supervised tokens)."""
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (B, L, V)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m-offline", help="model dir, .gguf or the offline preset")
    ap.add_argument("--batch_size", type=int, default=None, help="examples per step (default 4; 8 with --levers, the main job's batch)")
    ap.add_argument("--naive_length", type=int, default=1024, help="fixed padded length of the naive step")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per variant (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default). Use 1 when another "
                    "process shares the cores: oversubscribed OpenMP threads distort timings")
    ap.add_argument("--bf16", action="store_true", help="also time ours under bf16 autocast (what --bf16 training "
                    "does: fp32 master weights, bf16 matmuls; AMX on recent Xeons)")
    ap.add_argument("--skip_naive", action="store_true", help="leave out the (slow) naive variant")
    ap.add_argument("--levers", action="store_true", help="time the main job's step lever by lever instead "
                    "(batch 8 by default; see above)")
    ap.add_argument("--prefix_refresh", type=int, default=4, help="with --compiled_on: also time the compiled step "
                    "with the developer turn computed every N-th batch and reused between (the main job's 4)")
    ap.add_argument("--compiled_on", metavar="TRAIN_JSONL", help="instead: the main job's step plain and with "
                    "--compile, alternating, on 7 batches of real training data from TRAIN_JSONL spanning its "
                    "lengths (e.g. runs/main/data/codetether.train.jsonl, written by make main)")
    ap.add_argument("--skip_forced_on", metavar="TRAIN_JSONL",
                    help="instead: the main job's step (compiled, developer turn reused) on 7 real batches of "
                    "TRAIN_JSONL with the whole model turn in the loss and with the tokens the grounded grammar "
                    "forces left out (--skip_forced grounded), alternating, and their ratio")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.levers:
        return levers(args)
    if args.compiled_on:
        return compiled_on(args)
    if args.skip_forced_on:
        return skip_forced_on(args)
    args.batch_size = args.batch_size or 4

    from peft import LoraConfig, get_peft_model

    from tether_tune.modeling import load_model_and_tokenizer, resolve_model

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(resolve_model(args.model), dtype="float32", device="cpu")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    tools = load_tools(ROOT / "codetether_tools.json")
    enc = [encode_example(tok, ex, tools) for ex in batch_examples(args.batch_size)]
    rows = as_rows(enc)
    lengths = [len(e.input_ids) for e in enc]
    if max(lengths) > args.naive_length:
        ap.error(f"--naive_length {args.naive_length} cannot hold an example of {max(lengths)} tokens")
    print(f"batch: {len(rows)} examples, {min(lengths)}-{max(lengths)} tokens, prefix {enc[0].prefix_len}, "
          f"{sum(e.n_supervised for e in enc)} supervised; torch threads {torch.get_num_threads()}")

    variants = {
        "naive": lambda: naive_loss(model, rows, tok.pad_token_id, args.naive_length),
        "logits-only": lambda: supervised_loss(model, PadCollator(tok.pad_token_id, share_prefix=False)(rows))[0],
        "ours": lambda: supervised_loss(model, PadCollator(tok.pad_token_id, share_prefix=True)(rows))[0],
    }
    if args.bf16:
        def ours_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return supervised_loss(model, PadCollator(tok.pad_token_id, share_prefix=True)(rows))[0]
        variants["ours+bf16"] = ours_bf16
    if args.skip_naive:
        del variants["naive"]
    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, float] = {}
    for rep in range(args.repeats + 1):  # interleaved, so background load hits every variant alike
        for name, step in variants.items():
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            loss = step()
            loss.backward()
            dt = time.perf_counter() - t
            losses[name] = loss.item()
            if rep:  # the first round warms up
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in variants:
        print(f"{name:>12}: {med[name]:7.2f} s/step  (loss {losses[name]:.4f})")
    if "naive" in med:
        print(f"ratio naive/logits-only: {med['naive'] / med['logits-only']:.2f}x")
        print(f"ratio naive/ours:        {med['naive'] / med['ours']:.2f}x")
    if "ours+bf16" in med:
        print(f"ratio ours/ours+bf16:    {med['ours'] / med['ours+bf16']:.2f}x")
    print(f"ratio logits-only/ours:  {med['logits-only'] / med['ours']:.2f}x")
    return 0


def previous_loss(model, batch, prefix_head: bool, torch_ce: bool):
    """``trainer.shared_prefix_loss`` without gradient through the prefix, as it was before the step's levers:
    the prefix through the whole model (``prefix_head``) and the loss by ``F.cross_entropy`` (``torch_ce``)."""
    from tether_tune import trainer as T

    prefix, ids, mask = batch["prefix_ids"], batch["input_ids"], batch["attention_mask"]
    (b, s), p = ids.shape, prefix.shape[1]
    with torch.no_grad():
        if prefix_head:
            cache = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, logits_to_keep=1).cache
        else:
            cache = model.get_decoder()(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True).cache
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1)
    full_mask = torch.cat([torch.ones((b, p), dtype=mask.dtype), mask], dim=1)
    positions = torch.arange(p, p + s).unsqueeze(0).expand(b, s)
    keep, targets = T._next_token_keep(batch["labels"])
    logits = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=keep).logits
    if torch_ce:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets)
    return T.RowCrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets).mean()


def main_job_model(name: str):
    """The main job's model in training mode: bf16 frozen base, LoRA r16 on q/k/v/o without dropout, the tool and
    turn token rows (``train.add_lora``, as training builds it)."""
    from tether_tune.modeling import load_model_and_tokenizer, resolve_model
    from tether_tune.train import TrainConfig, add_lora

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(resolve_model(name), dtype="bfloat16", device="cpu")
    model = add_lora(TrainConfig(train_file="-", output_dir="-", lora_dropout=0.0), model, tok)
    return model.train(), tok


def levers(args) -> int:
    """The main job's training step, lever by lever, on one batch, in one process (see the module docstring)."""
    from accelerate.utils import convert_outputs_to_fp32

    from tether_tune import trainer as T

    batch_size = args.batch_size or 8
    model, tok = main_job_model(args.model)  # the trainable-token rows: sparse
    rows_layers = [m for m in model.modules() if "forward" in vars(m)]  # the trainable-token layers add_lora patched
    tools = load_tools(ROOT / "codetether_tools.json")
    enc = [encode_example(tok, ex, tools) for ex in batch_examples(batch_size)]
    batch = PadCollator(tok.pad_token_id, share_prefix=True)(as_rows(enc))
    print(f"batch: {batch_size} examples, prefix {enc[0].prefix_len} tokens, {tuple(batch['input_ids'].shape)} "
          f"after it, {sum(e.n_supervised for e in enc)} supervised; torch threads {torch.get_num_threads()}")

    def peft_rows(on: bool):  # PEFT's own forward for the trainable-token layers (or ours)
        for m in rows_layers:
            if on:
                vars(m).pop("forward", None)
            else:
                T.sparse_trainable_tokens(m)

    # accelerate's --bf16 (TrainingArguments' bf16, what the Trainer ran before CallTrainer's own autocast) wraps
    # the model's forward to convert its outputs, the logits, to fp32.
    own_forward = model.forward
    fp32_outputs = MethodType(convert_outputs_to_fp32(own_forward.__func__), model)
    ours = lambda: T.supervised_loss(model, batch, prefix_grad=False)[0]  # noqa: E731
    variants = {  # name: (PEFT's token rows, compiled, fp32 outputs, step)
        "before": (True, False, True, lambda: previous_loss(model, batch, prefix_head=True, torch_ce=True)),
        "+ prefix without head": (True, False, True,
                                  lambda: previous_loss(model, batch, prefix_head=False, torch_ce=True)),
        "+ token rows only": (False, False, True, lambda: previous_loss(model, batch, prefix_head=False, torch_ce=True)),
        "+ row cross-entropy": (False, False, True,
                                lambda: previous_loss(model, batch, prefix_head=False, torch_ce=False)),
        "+ shared-prefix attention": (False, False, True, ours),
        "+ compiled parts": (False, True, True, ours),
        "+ logits kept bf16 (ours)": (False, True, False, ours),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, float] = {}
    for rep in range(args.repeats + 1):  # interleaved; the first round warms up
        for name, (peft, compiled, fp32, step) in variants.items():
            peft_rows(peft)
            model.forward = fp32_outputs if fp32 else own_forward
            if compiled:  # compiled once in the warm-up round (about 30 s), reused after
                T.compile_step(model)
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = step()
            loss.backward()
            if rep:
                times[name].append(time.perf_counter() - t)
            losses[name] = loss.item()
            T.uncompile_step(model)
    model.forward = own_forward
    med = {k: statistics.median(v) for k, v in times.items()}
    first = med["before"]
    for name in variants:
        print(f"{name:>28}: {med[name]:6.2f} s/step  {first / med[name]:5.2f}x  (loss {losses[name]:.4f})")
    print("(the losses differ in the last digits where the attention's or the fused parts' bf16 rounding differs; "
          "tests/test_train.py shows each lever exact in fp32)")
    return 0


def real_batches(train_file: str, tok, batch_size: int, skip_forced: str = "none") -> list:
    """7 batches of ``batch_size`` real training examples from ``train_file``, from the shortest to the longest: 50
    batches' worth of examples, shuffled, sorted by length and cut into batches (as the Trainer's length-grouped
    sampler makes them), every 8th or so of them. ``skip_forced``: labels as ``--skip_forced`` leaves them."""
    import random

    from tether_tune.constrain import ToolCallConstraint
    from tether_tune.train import encode_all, load_training_examples, skip_forced as skip

    tools = load_tools(ROOT / "codetether_tools.json")
    examples = load_training_examples(train_file, tools, strict_grounding=False)
    random.Random(0).shuffle(examples)
    examples = examples[: 50 * batch_size]
    enc = encode_all(tok, examples, tools, None)
    if skip_forced != "none":
        enc = skip(enc, examples, ToolCallConstraint(tok, tools, grounded=skip_forced == "grounded"))
    rows = as_rows(sorted(enc, key=lambda e: len(e.input_ids)))
    batches = [PadCollator(tok.pad_token_id, share_prefix=True)(rows[i : i + batch_size])
               for i in range(0, len(rows) - batch_size + 1, batch_size)]
    return [batches[round(i * (len(batches) - 1) / 6)] for i in range(7)]


def skip_forced_on(args) -> int:
    """The main job's step (compiled, the developer turn reused every ``--prefix_refresh`` batches) on the same 7
    real batches with the whole model turn in the loss and with the grounded grammar's forced tokens left out
    (``--skip_forced grounded``), alternating, after a warm-up round that compiles; the two totals and their ratio."""
    from tether_tune import trainer as T

    batch_size = args.batch_size or 8
    model, tok = main_job_model(args.model)
    variants = {name: real_batches(args.skip_forced_on, tok, batch_size, name) for name in ("none", "grounded")}
    T.compile_step(model)
    reuse = {name: T.PrefixReuse(args.prefix_refresh) for name in variants}

    def step(batch, name: str) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = T.supervised_loss(model, batch, prefix_grad=False, reuse=reuse[name])
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for i in range(7):  # warm-up: compiles and touches every shape once
        for name, batches in variants.items():
            step(batches[i], name)
    total = dict.fromkeys(variants, 0.0)
    for _ in range(2):
        for i in range(7):
            times = {name: step(batches[i], name) for name, batches in variants.items()}
            for name, t in times.items():
                total[name] += t
            sup = {name: int((b[i]["labels"] != IGNORE_INDEX).sum()) for name, b in variants.items()}
            print(f"batch {tuple(variants['none'][i]['input_ids'].shape)}: {sup['none']} supervised tokens "
                  f"{times['none']:.2f} s, {sup['grounded']} without the forced ones {times['grounded']:.2f} s, "
                  f"{times['none'] / times['grounded']:.2f}x")
    print(f"all: whole model turn {total['none']:.1f} s, forced tokens left out {total['grounded']:.1f} s: "
          f"{total['none'] / total['grounded']:.2f}x")
    return 0


def compiled_on(args) -> int:
    """The main job's step (as ``--levers``' last two lines) plain and compiled (``trainer.compile_step``), on real
    batches: the training file's examples sorted by length and cut into batches of 8 (as the Trainer's
    length-grouped sampler makes them), 7 of them from the shortest to the longest; each batch timed plain, then
    compiled, twice, after a warm-up round that compiles."""
    from tether_tune import trainer as T

    model, tok = main_job_model(args.model)
    batches = real_batches(args.compiled_on, tok, args.batch_size or 8)
    reuse = T.PrefixReuse(args.prefix_refresh)  # one for the whole run: a refresh every N-th batch, as in training

    def step(batch, compiled: bool, reused: bool = False) -> float:
        if compiled:
            T.compile_step(model)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = T.supervised_loss(model, batch, prefix_grad=False, reuse=reuse if reused else None)
        loss.backward()
        model.zero_grad(set_to_none=True)
        T.uncompile_step(model)
        return time.perf_counter() - t

    for batch in batches:  # warm-up: compiles (about 30 s) and touches every shape once
        step(batch, True), step(batch, False), step(batch, True, True)
    total = {"plain": 0.0, "compiled": 0.0, "reused": 0.0}
    for _ in range(2):
        for batch in batches:
            plain, compiled, reused = step(batch, False), step(batch, True), step(batch, True, True)
            total["plain"] += plain
            total["compiled"] += compiled
            total["reused"] += reused
            print(f"batch {tuple(batch['input_ids'].shape)} after the prefix: plain {plain:.2f} s, "
                  f"compiled {compiled:.2f} s, {plain / compiled:.2f}x; + prefix reused {reused:.2f} s")
    print(f"all: plain {total['plain']:.1f} s, compiled {total['compiled']:.1f} s: "
          f"{total['plain'] / total['compiled']:.2f}x")
    print(f"compiled, the developer turn computed every {args.prefix_refresh}th batch (--prefix_refresh "
          f"{args.prefix_refresh}, {reuse.refreshes} refreshes in {len(batches) * 3} batches): {total['reused']:.1f} s, "
          f"{total['compiled'] / total['reused']:.2f}x the compiled step")
    return 0


if __name__ == "__main__":
    sys.exit(main())

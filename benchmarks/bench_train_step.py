"""One training step (forward + backward, LoRA r16 on q/k/v/o), naive vs ours, same batch, same process.

    python benchmarks/bench_train_step.py                       # the real 270M (offline preset), batch 4
    python benchmarks/bench_train_step.py --model DIR --repeats 2

- naive: what the original script did — every position's 262k-vocabulary logits, every example padded to a
  fixed length (the original's 512 cannot hold one example with the 8 declarations, so --naive_length, 1024);
- logits-only: logits only where the loss is, padded to the longest example of the batch;
- ours: logits-only plus the shared developer turn computed once per batch (the default in `tether-tune train`).

Prints the median seconds per step of each and the ratios. The losses are printed too: all three must agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tether_tune.data import Example  # noqa: E402
from tether_tune.encode import IGNORE_INDEX, encode_example  # noqa: E402
from tether_tune.format import Call  # noqa: E402
from tether_tune.tools import load_tools  # noqa: E402
from tether_tune.trainer import PadCollator, supervised_loss  # noqa: E402

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
    ap.add_argument("--batch_size", type=int, default=4, help="examples per step")
    ap.add_argument("--naive_length", type=int, default=1024, help="fixed padded length of the naive step")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per variant (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default). Use 1 when another "
                    "process shares the cores: oversubscribed OpenMP threads distort timings")
    ap.add_argument("--bf16", action="store_true", help="also time ours under bf16 autocast (what --bf16 training "
                    "does: fp32 master weights, bf16 matmuls; AMX on recent Xeons)")
    ap.add_argument("--skip_naive", action="store_true", help="leave out the (slow) naive variant")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from peft import LoraConfig, get_peft_model

    from tether_tune.modeling import load_model_and_tokenizer, resolve_model

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(resolve_model(args.model), dtype="float32", device="cpu")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    tools = load_tools(ROOT / "codetether_tools.json")
    enc = [encode_example(tok, ex, tools) for ex in batch_examples(args.batch_size)]
    rows = [{"input_ids": e.input_ids, "labels": e.labels, "prefix_len": e.prefix_len} for e in enc]
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


if __name__ == "__main__":
    sys.exit(main())

"""Latency per request, three ways, in one process on the same requests:

- naive: ``model.generate`` on the full prompt (the developer turn with the 8 declarations re-read every time);
- cached: the developer turn's KV cache computed once, each request runs only its own tokens (greedy);
- constrained: the cached path decoding under the tool grammar (forced tokens appended without a choice);
- constrained+lookup: that, plus draft tokens copied from the request (UUIDs, titles), verified in one forward
  each: the same tokens in fewer forwards (the Predictor's default).

Prints p50/p95 seconds per request for each, their ratios, a batched run over the prefix cache, and how often
the constrained calls agree with the unconstrained ones (and how many of each parse and validate).

    python benchmarks/bench_latency.py                              # the real 270M (offline preset)
    python benchmarks/bench_latency.py --model /tmp/tiny --n 4      # smoke run on a tiny model
    python benchmarks/bench_latency.py --model_path ./finetuned_model   # a trained adapter
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# (request, the calls it should give): the calls drive --gold runs.
CASES = [
    ("Create a task to refactor the payment service in codebase 3fa9c01b with priority 8",
     [("create_task", {"codebase_id": "3fa9c01b", "priority": 8, "title": "refactor the payment service"})]),
    ("What is the status of task 7c9e6679-7425-40de-944b-e07fc1f90ae7?",
     [("get_task", {"task_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"})]),
    ("Cancel task 0b1e2c3d-4f50-4a6b-8c7d-9e0f1a2b3c4d", [("cancel_task", {"task_id": "0b1e2c3d-4f50-4a6b-8c7d-9e0f1a2b3c4d"})]),
    ("Show me the history of session 550e8400-e29b-41d4-a716-446655440000",
     [("get_session_history", {"session_id": "550e8400-e29b-41d4-a716-446655440000"})]),
    ("Play back session 6ba7b810-9dad-11d1-80b4-00c04fd430c8 as a summary",
     [("playback_session", {"session_id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "style": "summary"})]),
    ("List my pending tasks", [("list_tasks", {"status": "pending"})]),
    ("Which agents are available right now?", [("discover_agents", {})]),
    ("Tell the code-reviewer agent to look at the auth module before Friday",
     [("send_message", {"agent_name": "code-reviewer", "message": "look at the auth module before Friday"})]),
    ("Get task f47ac10b-58cc-4372-a567-0e02b3c479d5 and tell me if it failed",
     [("get_task", {"task_id": "f47ac10b-58cc-4372-a567-0e02b3c479d5"})]),
    ("Create an explore task titled map the billing code",
     [("create_task", {"agent_type": "explore", "title": "map the billing code"})]),
    ("List the completed tasks of codebase global", [("list_tasks", {"codebase_id": "global", "status": "completed"})]),
    ("Thanks, that's all for now!", []),
]
REQUESTS = [r for r, _ in CASES]


class GoldSteered:
    """``--gold``: the model with its logits pushed (+1e4) towards the expected answer, one token per position.
    The compute per token is the real model's; only the choice is made for it, so timings have the lengths of
    correct answers even when the model under test is not trained yet."""

    def __init__(self, model, tokenizer):
        import torch

        self.inner, self.tokenizer, self.torch = model, tokenizer, torch
        self.script: list[int] = []
        self.prompt_len = 0

    def set(self, prompt_len: int, calls: list) -> None:
        from tether_tune.format import Call, Control, render_call_segments
        from tether_tune.tokenizer import encode_segments

        segments: list[str] = []
        for name, args in calls:
            segments += render_call_segments(Call(name, args))
        segments += [Control("<start_function_response>")] if calls else ["Happy to help.", Control("<end_of_turn>")]
        self.script, self.prompt_len = encode_segments(self.tokenizer, segments), prompt_len

    def bias(self, scores, n_new):  # scores [B, V], n_new [B]
        for b, n in enumerate(n_new.tolist()):
            if 0 <= n:
                scores[b, self.script[n] if n < len(self.script) else 1] += 1e4
        return scores

    # the nn.Module face that tether_tune.decoding uses
    @property
    def config(self):
        return self.inner.config

    @property
    def device(self):
        return self.inner.device

    def parameters(self):
        return self.inner.parameters()

    def forward(self, input_ids, cache=None, **kwargs):
        out = self.inner(input_ids=input_ids, cache=cache, **kwargs)
        keep = out.logits.shape[1]
        n_new = kwargs["position_ids"][:, -keep:] + 1 - self.prompt_len
        logits = out.logits.clone()
        for k in range(keep):
            logits[:, k] = self.bias(logits[:, k], n_new[:, k])
        out.logits = logits
        return out

    __call__ = forward

    def processor(self):  # the same push for model.generate
        def fn(input_ids, scores):
            n = self.torch.full((scores.shape[0],), input_ids.shape[1] - self.prompt_len)
            return self.bias(scores, n)

        return fn


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m-offline", help="base model: preset, dir, .gguf or name")
    parser.add_argument("--model_path", "--adapter", dest="model_path", default=None,
                        help="a training output dir (adapter + run_info.json); overrides --model")
    parser.add_argument("--tools", default=None, help="tools file (default: the run's, else CodeTether's, shipped with tether-tune)")
    parser.add_argument("--n", type=int, default=len(REQUESTS), help="how many of the built-in requests")
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--batch_size", type=int, default=8, help="for the batched run")
    parser.add_argument("--skip_naive", action="store_true", help="leave out plain generate (slow on the 270M)")
    parser.add_argument("--gold", action="store_true",
                        help="push the model to the expected calls: timings for answers of the right length")
    args = parser.parse_args(argv)

    import torch

    from tether_tune.predict import Predictor, read_prediction

    cases = (CASES * (1 + args.n // len(CASES)))[: args.n]
    requests = [r for r, _ in cases]
    gold_of = dict(CASES)
    t0 = time.perf_counter()
    pred = Predictor.load(args.model_path or args.model, tools=args.tools, constrained=True,
                          max_new_tokens=args.max_new_tokens)
    load_s = time.perf_counter() - t0
    constraint = pred.constraint
    model = pred.model
    steer = GoldSteered(model, pred.tokenizer) if args.gold else None
    if steer is not None:
        import inspect

        pred.model = steer
        assert "cache" in inspect.signature(model.forward).parameters
    print(f"model: {args.model_path or args.model} ({pred.base_model}); loaded in {load_s:.1f} s; "
          f"prefix {len(pred.prefix.ids)} tokens; torch threads {torch.get_num_threads()}", flush=True)

    def naive(request: str) -> tuple[str, int]:
        ids = pred.encode(request)
        extra = {"logits_processor": [steer.processor()]} if steer is not None else {}
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=pred.stop_ids,
                pad_token_id=pred.pad_id, **extra,
            )[0, len(ids):].tolist()
        from tether_tune.tokenizer import decode

        return decode(pred.tokenizer, out), len(out)

    def predictor_path(constrained: bool, speculate: int):
        def run(request: str) -> tuple[str, int]:
            pred.constraint = constraint if constrained else None
            pred.speculate = speculate
            p = pred.predict(request)
            return p.raw, int(p.timings["new_tokens"])

        return run

    cached = predictor_path(False, 0)
    cached(requests[0])  # warm-up (first-call allocations)
    # constrained+lookup is what Predictor does by default: the grammar, and drafts copied from the request.
    paths = {"cached": cached, "constrained": predictor_path(True, 0), "constrained+lookup": predictor_path(True, 8)}
    if not args.skip_naive:
        paths = {"naive": naive, **paths}
    times: dict[str, list[float]] = {k: [] for k in paths}
    raws: dict[str, list[str]] = {k: [] for k in paths}
    for i, request in enumerate(requests):
        row = []
        if steer is not None:
            steer.set(len(pred.encode(request)), gold_of[request])
        for name, fn in paths.items():
            t = time.perf_counter()
            raw, n_new = fn(request)
            dt = time.perf_counter() - t
            times[name].append(dt)
            raws[name].append(raw)
            row.append(f"{name} {dt:5.2f}s/{n_new:2d}")
        print(f"[{i + 1:2d}/{len(requests)}] " + "  ".join(row) + f"  {request[:50]!r}", flush=True)
        if "naive" in raws and raws["naive"][-1] != raws["cached"][-1]:
            print(f"    naive and cached differ:\n    {raws['naive'][-1]!r}\n    {raws['cached'][-1]!r}")

    print("\nper request (s):     p50     p95    mean")
    for name, ts in times.items():
        print(f"  {name:<19} {percentile(ts, 50):7.3f} {percentile(ts, 95):7.3f} {statistics.mean(ts):7.3f}")
    if "naive" in times:
        for other in ("cached", "constrained", "constrained+lookup"):
            r50 = percentile(times["naive"], 50) / percentile(times[other], 50)
            r95 = percentile(times["naive"], 95) / percentile(times[other], 95)
            print(f"  naive/{other:<19} p50 x{r50:.1f}  p95 x{r95:.1f}")
        same = sum(a == b for a, b in zip(raws["naive"], raws["cached"]))
        print(f"  cached output identical to naive: {same}/{len(requests)}")

    # Accuracy effect of the grammar: how many outputs parse and validate, and whether the calls change.
    def summary(raw: str) -> tuple[list[dict], str, list[str]]:
        calls, text, errors = read_prediction(raw, pred.tools)
        if not raw.endswith(("<eos>", "<end_of_turn>", "<start_function_response>")):
            errors = errors + ["truncated at --max_new_tokens"]
        return [c.to_dict() for c in calls], text, errors

    free = [summary(r) for r in raws["cached"]]
    cons = [summary(r) for r in raws["constrained"]]
    ok_free = sum(not e for _, _, e in free)
    ok_cons = sum(not e for _, _, e in cons)
    agree = sum(a[0] == b[0] and bool(a[1]) == bool(b[1]) for a, b in zip(free, cons))
    print(f"\nvalid outputs: unconstrained {ok_free}/{len(requests)}, constrained {ok_cons}/{len(requests)}; "
          f"same calls: {agree}/{len(requests)}")
    for r, a, b in zip(requests, free, cons):
        if a[:2] != b[:2]:
            print(f"  {r[:60]!r}\n    free:        {json.dumps(a[0])} {a[1][:60]!r} {a[2][:1]}\n"
                  f"    constrained: {json.dumps(b[0])} {b[1][:60]!r} {b[2][:1]}")

    if raws["constrained+lookup"] != raws["constrained"]:
        print("  WARNING: lookup drafts changed the constrained output")
    for name, c, k in (("cached", None, 0), ("constrained+lookup", constraint, 8)) if steer is None else ():
        pred.constraint, pred.speculate = c, k
        t = time.perf_counter()
        batch = pred.predict_batch(requests, batch_size=args.batch_size)
        dt = time.perf_counter() - t
        same = sum(p.raw == r for p, r in zip(batch, raws[name]))
        print(f"batched ({name}, batch {args.batch_size}): {dt / len(requests):.3f} s per request; "
              f"identical to one at a time: {same}/{len(requests)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency per request at batch size 1: the naive path, each lever added in turn, and llama.cpp, in one process
on the same requests (the held-out test split of a run), each request timed on every path before the next.

Paths (each keeps the levers above it):

- naive: ``model.generate`` on the full prompt (the developer turn with its declarations re-read every time);
- +prefix cache: the developer turn's KV cache computed once; each request feeds only its own tokens;
- +grammar: decoding under the grounded tool grammar (forced tokens appended without a choice);
- +drafts: tokens copied from the request, and the call draft, verified in the same forward;
- +restricted head: the output head computed only for the tokens the grammar allows, where they are few;
- +bf16: the weights in bfloat16 (the only lever here that changes numerics: see --compare_outputs);
- llama.cpp: the run exported to GGUF (``tether-tune export``), run by ``llama-cpp-python`` with its prefix cache
  on the same prompt ids, generating the same number of tokens as the default path did for that request.

Prints p50/p95/mean seconds per path, each path's ratio to llama.cpp, and how many outputs each path shares with
the path before it (the levers that keep numerics must keep every output).

    python benchmarks/bench_latency.py --model_path runs/main/model              # the trained run (README table)
    python benchmarks/bench_latency.py --model_path runs/main/model --profile    # where one request's time goes
    python benchmarks/bench_latency.py --model_path /tmp/tiny --n 4 --no-llama   # smoke run on a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def test_requests(model_path: str, test_file: str | None, n: int) -> list[str]:
    """The first ``n`` inputs of ``test_file`` (default: the run's held-out split, ``../data/*.test.jsonl``)."""
    from tether_tune.data import json_record, jsonl_lines

    if test_file is None:
        found = sorted((Path(model_path).parent / "data").glob("*.test.jsonl"))
        if not found:
            raise SystemExit(f"--test_file: {model_path} has no ../data/*.test.jsonl beside it; give one")
        test_file = str(found[0])
    out = [json_record(line, src)["input"] for src, line in jsonl_lines(test_file, "--test_file")]
    return out[:n]


class LlamaCpp:
    """llama.cpp on a GGUF, greedy, generating exactly ``n`` tokens after the prompt ids (its KV cache keeps the
    longest prefix shared with the previous prompt: the developer turn)."""

    def __init__(self, gguf: str, threads: int, n_ctx: int):
        from tether_tune.export import load_llama_cpp

        # Without repacking for AMX: llama.cpp crashes on Q8_0 repacked on this CPU (see load_llama_cpp).
        self.llm = load_llama_cpp(gguf, n_ctx=n_ctx, threads=threads)

    def __call__(self, ids: list[int], n: int) -> list[int]:
        out: list[int] = []
        for token in self.llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if len(out) >= n:
                break
        return out


def export_gguf(run: Any, quant: str, directory: str) -> str:
    """The loaded run (its adapter merged) written as a GGUF by ``tether-tune export``'s own function."""
    from tether_tune.export import export_gguf as write

    return str(write(run, Path(directory) / f"bench-{quant}.gguf", quant=quant))


def profile_one(pred: Any, request: str) -> None:
    """Where one request's milliseconds go (the default path): decoding's own regions (the first forward is the
    prefill: the request's tokens after the cached developer turn), then the torch operators."""
    from torch.profiler import ProfilerActivity, profile

    pred.predict(request)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = pred.predict(request)
    t = out.timings
    print(f"\nprofile of one request: {t['total_s'] * 1000:.0f} ms, {t['forward_calls']:.0f} forwards "
          f"(prefill {t['prefill_s'] * 1000:.0f} ms), {t['new_tokens']:.0f} tokens of which {t['forced_tokens']:.0f} "
          f"forced by the grammar and {t['draft_tokens']:.0f} drafted: {request!r}")
    regions = [e for e in prof.key_averages() if e.key.startswith("tether::")]
    print("| region | ms | calls |\n|---|---:|---:|")
    for e in sorted(regions, key=lambda e: -e.cpu_time_total):
        print(f"| {e.key[len('tether::'):]} | {e.cpu_time_total / 1000:.1f} | {e.count} |")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default="runs/main/model",
                        help="a training output dir (make main writes runs/main/model), model dir, .gguf or preset")
    parser.add_argument("--test_file", default=None,
                        help="JSONL with an \"input\" per line (default: the run's held-out split, ../data/*.test.jsonl)")
    parser.add_argument("--n", type=int, default=40, help="how many requests of the test file (the first n)")
    parser.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--skip_naive", action="store_true", help="leave out plain generate (the slowest path)")
    parser.add_argument("--llama", action=argparse.BooleanOptionalAction, default=None,
                        help="time llama.cpp too (the llama extra: pip install -e '.[llama]'); default: when installed")
    parser.add_argument("--gguf", default=None,
                        help="the GGUF llama.cpp runs (default: --model_path exported with --quant into a temp dir)")
    parser.add_argument("--quant", default="q8_0", choices=["f16", "q8_0"], help="for the default --gguf")
    parser.add_argument("--profile", action="store_true", help="also print a profile of one request")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from tether_tune.decoding import HEAD_LIMIT
    from tether_tune.predict import Predictor
    from tether_tune.rundir import load_run

    torch.set_num_threads(args.threads)
    requests = test_requests(args.model_path, args.test_file, args.n)
    t0 = time.perf_counter()
    run32 = load_run(args.model_path, dtype="float32")
    run16 = load_run(args.model_path, dtype="bfloat16")
    print(f"model: {args.model_path} ({run32.base_model}); loaded twice (fp32, bf16) in "
          f"{time.perf_counter() - t0:.1f} s; {len(requests)} requests; {args.threads} threads", flush=True)

    def predictor(run: Any, **kw: Any) -> Predictor:
        kw = {"constrained": True, "speculate": 0, "head_limit": 0, "max_new_tokens": args.max_new_tokens, **kw}
        return Predictor.from_run(run, **kw)

    free = predictor(run32, constrained=False)
    levers: dict[str, Predictor] = {
        "+prefix cache": free,
        "+grammar": predictor(run32),
        "+drafts": predictor(run32, speculate=8),
        "+restricted head": predictor(run32, speculate=8, head_limit=HEAD_LIMIT),
        "+bf16": predictor(run16, speculate=8, head_limit=HEAD_LIMIT),
    }
    default = "+bf16"
    shared = levers["+grammar"].constraint  # one grammar cache for all: the same grammars, compiled once
    for p in levers.values():
        if p.constraint is not None:
            p.constraint = shared

    def naive(request: str) -> int:
        ids = free.encode(request)
        with torch.inference_mode():
            out = run32.model.generate(
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=free.stop_ids,
                pad_token_id=free.pad_id)[0, len(ids):]
        return len(out)

    paths: dict[str, Callable[[str], Any]] = {} if args.skip_naive else {"naive": naive}
    paths.update({name: p.predict for name, p in levers.items()})
    llama = None
    try:
        import llama_cpp  # noqa: F401

        installed = True
    except ImportError:
        installed = False
    if args.llama and not installed:
        raise SystemExit("--llama: llama-cpp-python is not installed (pip install -e '.[llama]'; it compiles "
                         "llama.cpp, about 4 min), or pass --no-llama")
    if args.llama is None and not installed:
        print("llama.cpp: not installed (pip install -e '.[llama]'), its row is left out", flush=True)
    if args.llama or (args.llama is None and installed):
        workdir = tempfile.TemporaryDirectory(prefix="bench-latency-")  # removed when the process ends
        gguf = args.gguf or export_gguf(run32, args.quant, workdir.name)
        llama = LlamaCpp(gguf, args.threads, n_ctx=4096)
        print(f"llama.cpp: {gguf}", flush=True)

    for request in requests[:3]:  # warm-up: first-call allocations, oneDNN's kernels for new shapes
        for p in levers.values():
            p.predict(request)
        if llama is not None:
            llama(free.encode(request), 8)

    times: dict[str, list[float]] = {k: [] for k in [*paths, *(["llama.cpp"] if llama else [])]}
    raws: dict[str, list[str]] = {k: [] for k in levers}
    forwards: dict[str, list[float]] = {k: [] for k in levers}
    for i, request in enumerate(requests):
        n_default = 0
        for name, fn in paths.items():
            t = time.perf_counter()
            result = fn(request)
            times[name].append(time.perf_counter() - t)
            if name in levers:
                raws[name].append(result.raw)
                forwards[name].append(result.timings["forward_calls"])
                if name == default:
                    n_default = int(result.timings["new_tokens"])
        if llama is not None:
            ids = free.encode(request)
            t = time.perf_counter()
            got = llama(ids, n_default)
            times["llama.cpp"].append(time.perf_counter() - t)
            assert len(got) == n_default, (len(got), n_default)
        row = "  ".join(f"{k} {v[-1]:.2f}" for k, v in times.items())
        print(f"[{i + 1:2d}/{len(requests)}] {row}  {request[:40]!r}", flush=True)

    print(f"\nper request, batch size 1, {args.threads} threads, {len(requests)} requests:")
    print("| path | p50 s | p95 s | mean s | forwards | vs llama.cpp (p50) | outputs = previous path |")
    print("|---|---|---|---|---|---|---|")
    previous = None
    results = {}
    for name, ts in times.items():
        p50, p95 = percentile(ts, 50), percentile(ts, 95)
        ratio = f"{percentile(times['llama.cpp'], 50) / p50:.2f}x" if llama is not None else "-"
        same, fw = "-", "-"
        if name in levers:
            fw = f"{statistics.mean(forwards[name]):.1f}"
            if previous is not None:
                same = f"{sum(a == b for a, b in zip(raws[name], raws[previous]))}/{len(requests)}"
            previous = name
        print(f"| {name} | {p50:.3f} | {p95:.3f} | {statistics.mean(ts):.3f} | {fw} | {ratio} | {same} |")
        results[name] = {"p50_s": p50, "p95_s": p95, "mean_s": statistics.mean(ts)}
    print("(ratio > 1: faster than llama.cpp. The grammar and bf16 may change outputs; drafts and the restricted "
          "head must not.)")
    if args.profile:
        profile_one(levers[default], requests[0])
    if args.json:
        Path(args.json).write_text(json.dumps({"requests": len(requests), "threads": args.threads,
                                               "paths": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The output head after a batched forward: the model's own ``logits_to_keep`` vs tether-tune's split head.

    python benchmarks/bench_head.py [--model gemma-3-270m-offline] [--batch_size 8] [--keep 1] [--dtype bfloat16]

Calibration, unconstrained decoding and teacher-forced scoring take the scores of each row's last ``keep``
positions after one forward (``decoding.last_logits``). The model's own forward hands its tied 262k x 640 head a
strided [B, keep, H] slice; with the weights frozen (as in prediction), torch's matmul then expands the head to
[B, H, V] for a batched product instead of folding the batch into one. tether-tune runs the decoder, then the head
on a contiguous [B * keep, H]. Both run here in one process, alternating, on the same batch of requests; prints
each one's time, their ratio and the largest difference of their scores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_grounding import REQUESTS as GROUNDED  # noqa: E402  (this script's folder is on sys.path)

REQUESTS = GROUNDED + [  # 8 real requests: typed, spoken, function-like, words
    "list failed tasks in 9a8b7c6d",
    "get_task(task_id='aebc76ec-1d2f-4a3b-9c8d-7e6f5a4b3c2d')",
    "thanks, that's all",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m-offline", help="model argument (dir, .gguf, preset)")
    parser.add_argument("--batch_size", type=int, default=8, help="requests per forward (cycled from a list of 8)")
    parser.add_argument("--keep", type=int, default=1, help="positions scored per row (1: the first answer token)")
    parser.add_argument("--dtype", default="bfloat16", help="weights' dtype (the main job's: bfloat16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards of each kind")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tether_tune.decoding import last_logits
    from tether_tune.predict import Predictor

    pred = Predictor.load(args.model, constrained=False, dtype=args.dtype)
    model = pred.model
    for p in model.parameters():
        p.requires_grad_(False)

    class Own(torch.nn.Module):
        """The model's own forward: a wrapper without ``get_decoder``, so ``last_logits`` cannot split it."""

        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        config = property(lambda self: self.inner.config)
        device = property(lambda self: self.inner.device)

        def forward(self, **kwargs: Any) -> Any:
            return self.inner(**kwargs)

    n = len(pred.prefix.ids)
    requests = [REQUESTS[i % len(REQUESTS)] for i in range(args.batch_size)]
    suffixes = [pred.encode(r)[n:] for r in requests]
    paths = {"model's own logits_to_keep": Own(model), "split head (tether-tune)": model}
    times: dict[str, list[float]] = {name: [] for name in paths}
    scores: dict[str, Any] = {}
    for name, m in paths.items():  # warm-up, and the scores compared
        scores[name] = last_logits(m, pred.prefix, suffixes, args.keep, pred.pad_id)
    for _ in range(args.repeats):
        for name, m in paths.items():
            t = time.perf_counter()
            last_logits(m, pred.prefix, suffixes, args.keep, pred.pad_id)
            times[name].append(time.perf_counter() - t)
    own, split = (statistics.median(times[name]) for name in paths)
    print(f"batch {args.batch_size}, keep {args.keep}, {args.dtype}, median of {args.repeats}:")
    for name in paths:
        print(f"  {name:28s} {statistics.median(times[name]):7.3f} s")
    a, b = scores.values()
    print(f"  ratio {own / split:.1f}x; largest score difference {float((a - b).abs().max()):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of grounded decoding's per-request grammar, next to the cost of one forward of the model.

    python benchmarks/bench_grounding.py [--model gemma-3-270m-offline]

Grounded decoding compiles a grammar for every new request (ids, names and text from the request). This measures,
in one process with the real tokenizer: compiling the request's grammar (llguidance), computing the first mask
under it vs under the plain schema grammar, and one forward of the model on a request's tokens (the thing a
compile must stay well below). Prints each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

REQUESTS = [
    "cancel task 3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13 and tell the code reviewer to look at the upload endpoint",
    "create a task to rotate the leaked Stripe API key in codebase 3734715f, priority 8, use a build agent",
    "um can you play back session 0b9e6a4c-2f1d-4d7e-8c3a-5e6f7a8b9c0d as a summary",
    "dm docs-writer: the changelog for 2.4 needs the new retry flags, and list failed tasks in 9a8b7c6d",
    "what's the weather like tomorrow?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m-offline", help="model argument (dir, .gguf, preset)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tether_tune.constrain import ToolCallConstraint
    from tether_tune.predict import Predictor

    pred = Predictor.load(args.model, constrained=False)
    t0 = time.perf_counter()
    grounded = ToolCallConstraint(pred.tokenizer, pred.tools, grounded=True, cache_size=0)
    print(f"tokenizer index for llguidance (once per predictor): {time.perf_counter() - t0:.2f} s")
    compile_s, mask_plain_s, mask_grounded_s, forward_s = [], [], [], []
    vocab = len(pred.tokenizer)
    for request in REQUESTS * 3:
        t = time.perf_counter()
        m = grounded.matcher(request)
        compile_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        grounded.allowed([m], vocab)
        mask_grounded_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        grounded.allowed([grounded.matcher()], vocab)
        mask_plain_s.append(time.perf_counter() - t)
        ids = torch.tensor([pred.encode(request)[len(pred.prefix.ids):]])
        t = time.perf_counter()
        with torch.inference_mode():
            pred.model(input_ids=ids, logits_to_keep=1)
        forward_s.append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in (("compile", compile_s), ("first mask, grounded", mask_grounded_s),
                                                     ("first mask, plain", mask_plain_s), ("forward", forward_s))}
    for name, ms in med.items():
        print(f"{name:>22}: {ms:8.2f} ms (median of {len(compile_s)})")
    print(f"compile / forward = {med['compile'] / med['forward']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

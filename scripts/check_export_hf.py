"""Export a run with ``--format hf`` and check the export as a plain transformers user would load it.

- the weights: the reloaded ``model.safetensors`` equal the run's merged weights (the largest difference);
- the chat template: ``AutoTokenizer.apply_chat_template(messages, tools=..., add_generation_prompt=True,
  tokenize=False)`` equals our renderer on every prompt of the test file;
- greedy outputs: ``AutoModelForCausalLM.generate`` on those prompts (fp32) equals our predictor's plain greedy
  output on the adapter run (no grammar, no calibrated call bias: generate has neither), example by example, with
  the exact-call accuracy of both.

    python scripts/check_export_hf.py --model_path runs/main/model            # the held-out split (README)
    python scripts/check_export_hf.py --model_path runs/main/model --limit 5  # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from tether_tune.config import atomic_write_text
from tether_tune.data import read_examples
from tether_tune.export import export_hf
from tether_tune.format import render_prompt, request_messages
from tether_tune.predict import Predictor
from tether_tune.rundir import load_run
from tether_tune.scoring import score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_gguf_llama import answer  # noqa: E402  (what a caller acts on: the same comparison as llama.cpp's)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="a training output directory, e.g. runs/main/model")
    p.add_argument("--test_file", default=None,
                   help='JSONL of {"input", "output"} examples (default: MODEL_PATH/../data/codetether.test.jsonl)')
    p.add_argument("--limit", type=int, default=None, help="check only the first N examples (default: all)")
    p.add_argument("--max_new_tokens", type=int, default=128, help="generation limit, for both sides (default 128)")
    p.add_argument("--report", default=None,
                   help="the JSON report (default: MODEL_PATH/../hf_check.json); the export goes to a temp dir")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tether_tune.tokenizer import stop_token_ids

    model_path = Path(args.model_path)
    test_file = Path(args.test_file) if args.test_file else model_path.parent / "data" / "codetether.test.jsonl"
    if not test_file.is_file():
        raise SystemExit(f"--test_file {test_file}: no such file")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit {args.limit}: must be at least 1")
    examples = read_examples(test_file)[0][: args.limit]
    run = load_run(model_path, dtype="float32", device="cpu")
    tools = run.tools
    with tempfile.TemporaryDirectory(prefix="hf-export-") as tmp:
        t0 = time.perf_counter()
        out = export_hf(run, Path(tmp) / "hf")
        export_s = time.perf_counter() - t0
        tok = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        theirs = model.state_dict()
        ours_sd = run.model.state_dict()
        max_diff = max(float((theirs[k].float() - v.float()).abs().max()) for k, v in ours_sd.items() if k in theirs)
        missing = sorted(set(ours_sd) - set(theirs))

        # Plain greedy on both sides: no grammar, and no calibrated call bias (generate knows neither).
        predictor = Predictor.from_run(run, constrained=False, max_new_tokens=args.max_new_tokens, call_bias=0.0,
                                       next_call_bias=0.0)
        stops = stop_token_ids(tok)
        rows = []
        for ex in tqdm(examples, desc="hf export vs ours", unit="ex", file=sys.stderr):
            ours_prompt = render_prompt(ex.request, tools, run.developer)
            their_prompt = tok.apply_chat_template(request_messages(ex.request, run.developer), tools=tools,
                                                   add_generation_prompt=True, tokenize=False)
            ids = tok(their_prompt, add_special_tokens=False, return_tensors="pt").input_ids
            with torch.inference_mode():
                gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                     do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)
            raw = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=False)
            mine = predictor.predict(ex.request).raw
            rows.append({"request": ex.request, "template_equal": their_prompt == ours_prompt,
                         "ids_equal": ids[0].tolist() == predictor.encode(ex.request),
                         "same_raw": raw == mine, "same_calls": answer(raw, tools) == answer(mine, tools),
                         "hf": raw, "ours": mine})
    n = len(rows)
    report: dict[str, Any] = {
        "model_path": str(model_path), "test_file": str(test_file), "n": n, "export_seconds": round(export_s, 1),
        "max_weight_difference": max_diff, "weights_missing_in_export": missing,
        "template_equal": sum(r["template_equal"] for r in rows) / n,
        "prompt_ids_equal": sum(r["ids_equal"] for r in rows) / n,
        "same_raw": sum(r["same_raw"] for r in rows) / n,
        "same_calls": sum(r["same_calls"] for r in rows) / n,
        "exact_call_accuracy_hf": score(examples, [r["hf"] for r in rows], tools)["exact_call_accuracy"],
        "exact_call_accuracy_ours": score(examples, [r["ours"] for r in rows], tools)["exact_call_accuracy"],
        "examples": rows,
    }
    target = Path(args.report) if args.report else model_path.parent / "hf_check.json"
    atomic_write_text(target, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print("| check | result |\n|---|---|")
    for key in ("n", "max_weight_difference", "template_equal", "prompt_ids_equal", "same_raw", "same_calls",
                "exact_call_accuracy_hf", "exact_call_accuracy_ours"):
        print(f"| {key} | {report[key]} |")
    print(f"report: {target}")
    ok = (not missing and max_diff == 0.0 and report["template_equal"] == 1 and report["same_raw"] == 1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

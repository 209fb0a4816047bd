"""Check a run's GGUF exports in llama.cpp: the prompt's ids, and greedy calls equal to our predictor's.

    python scripts/check_gguf_llama.py --model_path runs/main/model --quant f16 q8_0 --limit 5

Needs the llama extra (``pip install -e ".[llama]"``: llama-cpp-python, which compiles llama.cpp). For each quant
the run is exported with ``tether_tune.export.export_gguf`` into ``--work_dir`` and loaded once in llama.cpp; for
each example of ``--test_file``:

1. the prompt our renderer writes (the chat template's text), tokenized by llama.cpp with its special tokens
   parsed, against our ids (``Predictor.encode``);
2. llama.cpp's greedy decoding from our ids, until llama.cpp's own end-of-generation tokens (the GGUF's
   ``<eos>``, ``<end_of_turn>``, ``<start_function_response>``), detokenized by llama.cpp and read by our parser,
   against our predictor's *unconstrained* greedy output (``constrained=False``, ``call_bias`` 0, the same
   ``--max_new_tokens``): the like-for-like pair, as llama.cpp has no grammar of ours. Consecutive prompts share
   the developer turn: llama-cpp-python keeps it in its KV cache and evaluates only each request's suffix.

Prints a Markdown table (per quant: prompt ids equal, same calls as ours, same text as ours, and the exact-call
accuracy of both against the gold outputs, scored by ``tether_tune.scoring.score``) and writes a JSON report
with every output, atomically. docs/export.md explains the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from tether_tune.config import atomic_write_text
from tether_tune.data import Example, read_examples
from tether_tune.export import QUANTS, export_gguf
from tether_tune.export import load_llama_cpp as load_llama
from tether_tune.format import render_prompt
from tether_tune.predict import Predictor, read_prediction
from tether_tune.rundir import LoadedRun, load_run
from tether_tune.scoring import score

#: Where ``scripts/main_job.sh`` puts a run's held-out split: RUN/data beside the training output RUN/model.
DEFAULT_TEST_FILE = Path("data") / "codetether.test.jsonl"


# --------------------------------------------------------------------------------------------------------------
# llama.cpp
# --------------------------------------------------------------------------------------------------------------


def llama_prompt_ids(llm: Any, prompt: str) -> list[int]:
    """llama.cpp's ids of a rendered prompt: special tokens parsed, no BOS added (the prompt writes ``<bos>``)."""
    return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)


def llama_stop_ids(llm: Any) -> set[int]:
    """The ids llama.cpp ends generation on (its end-of-generation set, read from the GGUF)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    return {i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)}


def llama_greedy(llm: Any, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: set[int]) -> tuple[str, bool]:
    """(raw model turn, finished) of llama.cpp's greedy decoding: the new tokens, the stop token included,
    detokenized by llama.cpp with control tokens written out; ``finished`` False when it hit ``max_new_tokens``
    first. ``generate`` reuses the KV cache of the longest prefix this prompt shares with the previous one."""
    new: list[int] = []
    gen = llm.generate(list(prompt_ids), temp=0.0, repeat_penalty=1.0, reset=True)
    try:
        for token in gen:
            new.append(token)
            if token in stop_ids or len(new) >= max_new_tokens:
                break
    finally:
        gen.close()
    raw = llm.detokenize(new, special=True).decode("utf-8", errors="replace")
    return raw, bool(new) and new[-1] in stop_ids


# --------------------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------------------


def answer(raw: str, tools: Sequence[dict]) -> tuple[list[dict], bool]:
    """What a caller acts on: the valid calls (our parser, coercion and validation) and whether it answered in
    words instead."""
    calls, text, _ = read_prediction(raw, tools)
    return [c.to_dict() for c in calls], bool(text)


def our_outputs(predictor: Predictor, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Our predictor's raw output per example, one request at a time, with whether it stopped by itself."""
    out = []
    for ex in tqdm(examples, desc="ours (unconstrained)", unit="ex", file=sys.stderr):
        t0 = time.perf_counter()
        pred = predictor.predict(ex.request)
        out.append({"raw": pred.raw, "finished": not any("max_new_tokens" in e for e in pred.errors),
                    "seconds": time.perf_counter() - t0})
    return out


def check_quant(llm: Any, predictor: Predictor, examples: Sequence[Example], ours: Sequence[dict[str, Any]],
                label: str) -> dict[str, Any]:
    """The per-example comparison of llama.cpp (one loaded GGUF) with our outputs, and its summary."""
    tools = predictor.tools
    stop_ids = llama_stop_ids(llm)
    rows = []
    for ex, mine in zip(tqdm(examples, desc=f"llama.cpp {label}", unit="ex", file=sys.stderr), ours):
        ids = predictor.encode(ex.request)
        prompt = render_prompt(ex.request, tools, predictor.developer)
        t0 = time.perf_counter()
        raw, finished = llama_greedy(llm, ids, predictor.max_new_tokens, stop_ids)
        rows.append({
            "id": ex.id, "request": ex.request,
            "prompt_ids_equal": llama_prompt_ids(llm, prompt) == ids,
            "same_calls": answer(raw, tools) == answer(mine["raw"], tools),
            "same_raw": raw == mine["raw"],
            "llama_cpp": raw, "llama_cpp_finished": finished, "ours": mine["raw"],
            "seconds": time.perf_counter() - t0,
        })
    n = len(rows)
    scored = score(examples, [r["llama_cpp"] for r in rows], tools, [not r["llama_cpp_finished"] for r in rows])
    return {
        "n": n,
        "prompt_ids_equal": sum(r["prompt_ids_equal"] for r in rows) / n,
        "same_calls": sum(r["same_calls"] for r in rows) / n,
        "same_raw": sum(r["same_raw"] for r in rows) / n,
        "exact_call_accuracy": scored["exact_call_accuracy"],
        "seconds_per_example": sum(r["seconds"] for r in rows) / n,
        # llama.cpp adds tokens it knows by their text alone (Gemma 3's `</s>`, 212) to the GGUF's stop tokens.
        "stop_tokens": {i: llm.detokenize([i], special=True).decode("utf-8", errors="replace")
                        for i in sorted(stop_ids)},
        "examples": rows,
    }


def run_check(run: LoadedRun, examples: Sequence[Example], quants: Sequence[str], work_dir: Path,
              max_new_tokens: int = 128, threads: int = 1, repack: bool = False,
              reuse_gguf: bool = False) -> dict[str, Any]:
    """Export ``run`` once per quant into ``work_dir``, decode ``examples`` with our predictor and with
    llama.cpp, and compare: the report ``main`` prints and writes."""
    predictor = Predictor.from_run(run, constrained=False, max_new_tokens=max_new_tokens, call_bias=0.0,
                                   next_call_bias=0.0)
    ggufs = {}
    for quant in quants:
        path = work_dir / f"model-{quant}.gguf"
        if not (reuse_gguf and path.is_file()):
            t0 = time.perf_counter()
            export_gguf(run, path, quant)
            print(f"exported {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        ggufs[quant] = path
    ours = our_outputs(predictor, examples)
    ours_scored = score(examples, [o["raw"] for o in ours], predictor.tools, [not o["finished"] for o in ours])
    # The KV cache holds the longest prompt and its output.
    n_ctx = max(len(predictor.encode(ex.request)) for ex in examples) + max_new_tokens + 8
    report: dict[str, Any] = {
        "n": len(examples),
        "max_new_tokens": max_new_tokens,
        "ours": {"decoding": "unconstrained, call_bias 0", "exact_call_accuracy": ours_scored["exact_call_accuracy"],
                 "seconds_per_example": sum(o["seconds"] for o in ours) / len(ours)},
        "quants": {},
    }
    for quant, path in ggufs.items():
        llm = load_llama(path, n_ctx, threads, repack, kv_f32=quant == "f32")  # f32: as exact as llama.cpp goes
        report["quants"][quant] = {"gguf": str(path), **check_quant(llm, predictor, examples, ours, quant)}
        llm.close()
    return report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(report: dict[str, Any]) -> str:
    """The summary table: one row per GGUF."""
    lines = ["| GGUF | examples | prompt ids equal | same calls as ours | same text as ours | "
             "exact-call accuracy, llama.cpp | exact-call accuracy, ours | llama.cpp s/example |",
             "|---|---|---|---|---|---|---|---|"]
    for quant, q in report["quants"].items():
        lines.append(f"| {quant} | {q['n']} | {_pct(q['prompt_ids_equal'])} | {_pct(q['same_calls'])} | "
                     f"{_pct(q['same_raw'])} | {_pct(q['exact_call_accuracy'])} | "
                     f"{_pct(report['ours']['exact_call_accuracy'])} | {q['seconds_per_example']:.2f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Export a run as GGUF and check it in llama.cpp against our tokenizer and our predictor.")
    p.add_argument("--model_path", required=True,
                   help="a training output directory (its adapter is merged in fp32 on the CPU, as "
                        "`tether-tune export` does), e.g. runs/main/model")
    p.add_argument("--test_file", default=None,
                   help='JSONL of {"input", "output"} gold examples (default: the run\'s held-out split, '
                        f"MODEL_PATH/../{DEFAULT_TEST_FILE.as_posix()})")
    p.add_argument("--quant", nargs="+", default=["f16", "q8_0"], choices=QUANTS,
                   help="the GGUF exports to check, one llama.cpp model each (default: f16 q8_0)")
    p.add_argument("--limit", type=int, default=None, help="check only the first N examples (default: all)")
    p.add_argument("--work_dir", default=None,
                   help="where the GGUFs and the report go (default: MODEL_PATH/../llama_check)")
    p.add_argument("--report", default=None, help="the JSON report (default: WORK_DIR/llama_check.json)")
    p.add_argument("--max_new_tokens", type=int, default=128,
                   help="generation limit per request, for llama.cpp and for our predictor alike (default: 128)")
    p.add_argument("--threads", type=int, default=1,
                   help="llama.cpp's CPU threads (default: 1; its threads spin while they wait, so more threads "
                        "than idle cores is much slower)")
    p.add_argument("--repack", action="store_true",
                   help="let llama.cpp repack weights for its CPU kernels (off: on AMX CPUs its Q8_0 kernels "
                        "crash, llama.cpp issue #20824)")
    p.add_argument("--reuse_gguf", action="store_true",
                   help="use the GGUFs already in WORK_DIR instead of exporting again")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit {args.limit}: must be at least 1")
    if args.max_new_tokens < 1 or args.threads < 1:
        parser.error("--max_new_tokens and --threads must be at least 1")
    model_path = Path(args.model_path).expanduser()
    if not model_path.is_dir():
        parser.error(f"--model_path {args.model_path}: no such directory (a training output directory)")
    test_file = Path(args.test_file) if args.test_file else model_path.parent / DEFAULT_TEST_FILE
    if not test_file.is_file():
        parser.error(f"--test_file {test_file}: no such file")
    try:
        import llama_cpp
    except ImportError:
        parser.error('llama-cpp-python is not installed: pip install -e ".[llama]" (it compiles llama.cpp, '
                     "about 4 minutes)")
    work_dir = Path(args.work_dir) if args.work_dir else model_path.parent / "llama_check"
    report_path = Path(args.report) if args.report else work_dir / "llama_check.json"
    examples, _ = read_examples(test_file, strict=True)
    examples = examples[: args.limit]
    if not examples:
        parser.error(f"--test_file {test_file}: no examples")
    if any(ex.history or ex.developer for ex in examples):
        print("note: earlier turns and developer context of the gold examples are not given to either model "
              "(the predictor takes the request alone)", file=sys.stderr)

    run = load_run(model_path, dtype="float32", device="cpu")
    report = run_check(run, examples, args.quant, work_dir, args.max_new_tokens, args.threads, args.repack,
                       args.reuse_gguf)
    report = {"model_path": str(model_path), "test_file": str(test_file),
              "llama_cpp_python": llama_cpp.__version__, **report}
    atomic_write_text(report_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(markdown(report), end="")
    print(f"report: {report_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

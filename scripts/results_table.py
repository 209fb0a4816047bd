"""Print a run's results as Markdown (what README's results section shows).

    python scripts/results_table.py runs/main

Reads the run directory RUN/model through ``tether_tune.rundir`` (run info and training metrics),
RUN/eval_report.json (accuracy, side by side) and RUN/latency_report.json (per-request latency at batch size 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tether_tune.rundir import read_metrics, read_run_info


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def main(run: str) -> int:
    run_dir = Path(run)
    run_info = read_run_info(run_dir / "model")
    if run_info is None:
        sys.exit(f"{run_dir / 'model'}: not a training output directory (no run info)")
    info = run_info.to_dict()
    logs = read_metrics(run_dir / "model")
    report = json.loads((run_dir / "eval_report.json").read_text())
    latency_path = run_dir / "latency_report.json"
    latency = json.loads(latency_path.read_text()) if latency_path.exists() else None

    accs = info.get("val_exact_call_accuracy_per_epoch", [])
    losses = info.get("val_loss_per_epoch", [])
    if accs or losses:
        print("Training (validation split, exact-call accuracy on a fixed sample):\n")
        print("| | base | " + " | ".join(f"epoch {i + 1}" for i in range(len(accs))) + " |")
        print("|---|---|" + "---|" * len(accs))
        print(f"| exact-call accuracy | {_pct(info.get('val_exact_call_accuracy_before'))} | "
              + " | ".join(_pct(a) for a in accs) + " |")
        print("| validation loss | – | " + " | ".join(f"{x:.3f}" for x in losses) + " |")
    else:
        print("Training: no validation pass (--eval_strategy no); the validation split calibrated the decisions.")
    train_loss = [(r["step"], r["loss"]) for r in logs if "loss" in r]
    if train_loss:
        marks = sorted({0, len(train_loss) // 4, len(train_loss) // 2, 3 * len(train_loss) // 4, len(train_loss) - 1})
        print("\nTraining loss by optimizer step: " + ", ".join(f"{train_loss[i][0]}: {train_loss[i][1]:.3f}" for i in marks))
    print(f"\n{info.get('global_steps')} optimizer steps in {info.get('train_seconds')} s.\n")

    runs = {report["meta"]["label"]: report, **report.get("compare", {})}
    print("Held-out test split (templates and values never seen in training):\n")
    cols = list(runs)
    print("| metric | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for key in ("exact_call_accuracy", "tool_selection_accuracy", "argument_f1", "parse_rate", "schema_valid_rate",
                "no_call_precision", "no_call_recall", "multi_call_exact_accuracy"):
        print(f"| {key} | " + " | ".join(_pct(runs[c].get(key)) for c in cols) + " |")
    handwritten_path = run_dir / "handwritten_report.json"
    if handwritten_path.exists():
        hw = json.loads(handwritten_path.read_text())
        hw_runs = {hw["meta"]["label"]: hw, **hw.get("compare", {})}
        cols = list(hw_runs)
        print("\nIndependent hand-written test set (eval/handwritten.jsonl):\n")
        print("| metric | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for key in ("exact_call_accuracy", "tool_selection_accuracy", "argument_f1", "no_call_precision",
                    "no_call_recall", "multi_call_exact_accuracy"):
            print(f"| {key} | " + " | ".join(_pct(hw_runs[c].get(key)) for c in cols) + " |")
        tags = list(dict.fromkeys(t for r in hw_runs.values() for t in r.get("per_tag", {})))
        print("\n| exact-call accuracy by tag | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for t in tags:
            print(f"| {t} | " + " | ".join(_pct(hw_runs[c].get("per_tag", {}).get(t, {}).get("exact_call_accuracy"))
                                         for c in cols) + " |")
    if latency:
        lat_runs = {latency["meta"]["label"]: latency, **latency.get("compare", {})}
        print("\nPer-request latency of the fine-tuned model on this CPU (batch size 1):\n")
        print("| decoding | exact-call accuracy | p50 | p95 | tokens/s |")
        print("|---|---|---|---|---|")
        for name, r in lat_runs.items():
            lat = r.get("latency", {})
            print(f"| {name} | {_pct(r.get('exact_call_accuracy'))} | {lat.get('p50_s', 0):.2f} s | "
                  f"{lat.get('p95_s', 0):.2f} s | {lat.get('tokens_per_s', 0):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/main"))

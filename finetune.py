#!/usr/bin/env python
"""Fine-tune FunctionGemma on CodeTether tool calls, or evaluate a fine-tuned model.

    python finetune.py --train_file train.jsonl --val_file val.jsonl --output_dir ./finetuned_model \
        --epochs 3 --batch_size 4 --learning_rate 3e-4
    python finetune.py --evaluate --model_path ./finetuned_model --test_file test.jsonl

A thin door into the library: training is `tether-tune train`, evaluation `tether-tune evaluate`
(same flags; `--help` with or without `--evaluate` lists them). Works from any directory, and under
`torchrun --nproc_per_node N finetune.py ...` / `accelerate launch finetune.py ...`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works from a checkout without installing

from tether_tune import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--evaluate" in argv:
        argv.remove("--evaluate")
        return cli.run_cli("evaluate", argv, prog="finetune.py --evaluate")
    return cli.run_cli("train", argv, prog="finetune.py")


if __name__ == "__main__":
    sys.exit(main())

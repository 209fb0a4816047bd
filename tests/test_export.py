"""Export keeps tool calling: our Jinja chat template equals our renderer byte for byte; the merged HF export and the
GGUF reload (plain transformers; our own loader) and decode exactly as the adapter run does (tiny model, fp32)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether_tune.cli import main
from tether_tune.data import read_examples
from tether_tune.export import MODELFILE, chat_template, ollama_system
from tether_tune.format import STOP_TOKENS, render_conversation, render_prompt, request_messages
from tether_tune.modeling import build_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
GOLDEN_FILES = sorted((REPO / "tests" / "fixtures" / "golden").glob("*.json"))
DEVELOPER = "Today is 2025-01-31."
REQUESTS = [ex.request for ex in read_examples(REPO / "eval" / "handwritten.jsonl")[0]]


@pytest.fixture(scope="module")
def template_tokenizer():
    tok = build_tiny_tokenizer()
    tok.chat_template = chat_template()
    return tok


def _apply(tok, messages, tools, add_generation_prompt=True) -> str:
    return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                   tokenize=False)


# ----------------------------------------------------------------------------------------------------------------
# The chat template
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_template_reproduces_the_golden_renderings(template_tokenizer, path: Path) -> None:
    g = json.loads(path.read_text())
    assert _apply(template_tokenizer, g["messages"], g["tools"], g["add_generation_prompt"]) == g["expected"]


def test_template_equals_the_renderer_on_every_handwritten_request(template_tokenizer, tools) -> None:
    assert len(REQUESTS) > 200
    for request in REQUESTS:
        for developer in (None, DEVELOPER):
            messages = request_messages(request, developer)
            assert _apply(template_tokenizer, messages, tools) == render_prompt(request, tools, developer)


def _conversations(tools: list[dict]) -> list[tuple[list[dict], list[dict] | None]]:
    call = {"type": "function", "function": {"name": "create_task", "arguments": {
        "title": "Fix <escape> bug", "priority": 8, "tags": ["a", "B"], "meta": {"z": 1.5, "A": True, "b": False}}}}
    call2 = {"function": {"name": "list_tasks", "arguments": {}}}
    response = {"name": "create_task", "response": {"task_id": "t-1", "ok": True, "n": 3}}
    return [
        ([{"role": "user", "content": "  hi  "}], tools),  # no developer message: declarations get their own turn
        ([{"role": "system", "content": "Be brief.\n" }, {"role": "user", "content": "hi"}], tools),
        ([{"role": "developer", "content": [{"type": "text", "text": "part one "}, {"type": "text", "text": "two"}]},
          {"role": "user", "content": "hi"}], tools),
        ([{"role": "user", "content": "hi"}], None),
        ([{"role": "developer", "content": "x"}, {"role": "user", "content": "make two"},
          {"role": "assistant", "content": "", "tool_calls": [call, call2]},
          {"role": "tool", "content": [response, {"name": "list_tasks", "response": {"tasks": []}}]},
          {"role": "assistant", "content": "Done: t-1."}, {"role": "user", "content": "and now?"}], tools),
        ([{"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": [call]},
          {"role": "tool", "content": response}, {"role": "tool", "content": {"name": "x", "content": {"y": "z"}}}],
         tools),
        ([{"role": "user", "content": "go"}, {"role": "assistant", "content": "Sure.", "tool_calls": [call2]}], tools),
        ([{"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": [call2]},
          {"role": "tool", "content": response}, {"role": "assistant", "content": "ok"}], tools[:2]),
    ]


def test_template_equals_the_renderer_on_multi_turn_conversations(template_tokenizer, tools) -> None:
    for messages, conv_tools in _conversations(tools):
        for gen in (True, False):
            assert _apply(template_tokenizer, messages, conv_tools, gen) == render_conversation(
                messages, conv_tools, gen), messages


_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_scalar = st.one_of(st.text(max_size=20), st.integers(-(10**12), 10**12), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False, width=64))
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_key, inner, max_size=3)), max_leaves=8)
_prop = st.fixed_dictionaries({"description": st.text(max_size=10)},
                              optional={"type": st.sampled_from(["string", "integer", "array"]),
                                        "enum": st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=3)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=st.dictionaries(_key, _value, max_size=4), props=st.dictionaries(_key, _prop, max_size=4),
       required=st.lists(_key, max_size=2), text=st.text(max_size=30))
def test_template_equals_the_renderer_on_random_arguments_and_schemas(template_tokenizer, arguments, props,
                                                                      required, text) -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {
        "type": "object", "properties": props, "required": required}}}]
    messages = [{"role": "developer", "content": text}, {"role": "user", "content": text},
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": arguments}}]},
                {"role": "tool", "content": {"name": "f", "response": arguments or {"ok": 1}}}]
    assert _apply(template_tokenizer, messages, tools) == render_conversation(messages, tools, True)


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}],
    [{"role": "robot", "content": "a"}],
    [{"role": "user", "content": "a"}, {"role": "tool", "content": "not an object"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"name": "f", "arguments": {"x": None}}]}],
])
def test_template_refuses_what_the_renderer_refuses(template_tokenizer, messages) -> None:
    from tether_tune.format import FormatError

    with pytest.raises(FormatError):
        render_conversation(messages, None, True)
    with pytest.raises(Exception):
        _apply(template_tokenizer, messages, None)


# ----------------------------------------------------------------------------------------------------------------
# Exports of a tiny run
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir: Path, tools: list[dict], tmp_path_factory: pytest.TempPathFactory):
    """A run directory with a random LoRA adapter (it changes the outputs), and the PEFT model it came from."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    out = tmp_path_factory.mktemp("export") / "run"
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    (out / "tools.json").write_text(json.dumps(tools[:4]))
    (out / "run_info.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "developer": DEVELOPER}))
    peft_model.eval()
    return out, peft_model


def _greedy(model, ids: list[int], stop: list[int], n: int = 10) -> list[int]:
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=stop,
                             pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_hf_export_reloads_with_plain_transformers_and_decodes_like_the_adapter(tiny_run, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tether_tune.tokenizer import encode_prompt, stop_token_ids

    run_dir, peft_model = tiny_run
    out = tmp_path / "hf"
    assert main(["export", "--model_path", str(run_dir), "--format", "hf", "--output", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    run_tools = json.loads((run_dir / "tools.json").read_text())
    stop = stop_token_ids(tok)
    assert sorted(model.generation_config.eos_token_id) == sorted(stop)
    for request in REQUESTS[:12]:
        text = tok.apply_chat_template(request_messages(request, DEVELOPER), tools=run_tools,
                                       add_generation_prompt=True, tokenize=False)
        assert text == render_prompt(request, run_tools, DEVELOPER)
        ids = encode_prompt(tok, request, run_tools, DEVELOPER)
        assert tok(text, add_special_tokens=False).input_ids == ids
        assert _greedy(model, ids, stop) == _greedy(peft_model, ids, stop)


def _loaded(path: Path, monkeypatch) -> object:
    from tether_tune.predict import Predictor

    monkeypatch.setenv("TETHER_TUNE_CACHE", str(path.parent / "cache"))
    return Predictor.load(str(path), constrained=False, max_new_tokens=10, dtype="float32", device="cpu")


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0"])
def test_gguf_export_round_trips_through_our_loader(tiny_run, tmp_path, monkeypatch, quant) -> None:
    import gguf

    from tether_tune.predict import Predictor

    run_dir, _ = tiny_run
    out = tmp_path / f"model-{quant}.gguf"
    assert main(["export", "--model_path", str(run_dir), "--format", "gguf", "--quant", quant,
                 "--output", str(out)]) == 0
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.architecture"].contents() == "gemma3"
    assert reader.fields["tokenizer.chat_template"].contents() == chat_template()
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == 1
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == 106
    assert reader.fields["tokenizer.ggml.eom_token_id"].contents() == 50
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    for token, i in {"<start_function_call>": 48, "<start_function_response>": 50, "<end_of_turn>": 106}.items():
        assert tokens[i] == token and types[i] == gguf.TokenType.CONTROL
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert kinds["blk.0.attn_q.weight"].name == quant.upper()

    modelfile = (tmp_path / MODELFILE).read_text()
    run_tools = json.loads((run_dir / "tools.json").read_text())
    assert modelfile.startswith(f"FROM ./{out.name}\n")
    assert f'SYSTEM """{ollama_system(run_tools, DEVELOPER)}"""' in modelfile
    assert all(f'PARAMETER stop "{t}"' in modelfile for t in STOP_TOKENS)

    want = Predictor.load(str(run_dir), constrained=False, max_new_tokens=10, dtype="float32", device="cpu")
    got = _loaded(out, monkeypatch)
    for request in REQUESTS[:12]:
        assert got.tokenizer(render_prompt(request, run_tools, DEVELOPER), add_special_tokens=False).input_ids == \
            want.tokenizer(render_prompt(request, run_tools, DEVELOPER), add_special_tokens=False).input_ids
    # The reference: the merged weights as the GGUF stores them (f16 rounds the matrices; norms stay f32).
    ref = copy.deepcopy(want.model)
    if quant == "f16":
        with torch.no_grad():
            for p in ref.parameters():
                if p.ndim > 1:
                    p.copy_(p.half().float())
    sd_ref, sd_got = ref.state_dict(), got.model.state_dict()
    for name, tensor in sd_ref.items():
        if quant == "q8_0":  # 8-bit blocks of 32 values: within half a step of each block's scale
            assert torch.allclose(sd_got[name], tensor, atol=tensor.abs().max().item() / 127 + 1e-6), name
        else:
            assert torch.allclose(sd_got[name], tensor, atol=1e-6, rtol=0), name
    if quant != "q8_0":  # Q8_0 is lossy: its calls are scored on the real model (docs/export.md)
        for request in REQUESTS[:12]:
            ids = want.encode(request)
            assert _greedy(got.model, ids, want.stop_ids) == _greedy(ref, ids, want.stop_ids), request


@pytest.mark.parametrize("flags, says", [
    (["--format", "gguf", "--output", "{tmp}/x"], "ending in .gguf"),
    (["--output", "{tmp}/full"], "--overwrite"),
    (["--quant", "q4", "--output", "{tmp}/o"], "--quant"),
])
def test_export_refuses_bad_flags(tiny_run, tmp_path, capsys, flags, says) -> None:
    run_dir, _ = tiny_run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["export", "--model_path", str(run_dir), *[f.format(tmp=tmp_path) for f in flags]])
    assert info.value.code == 2
    assert says in capsys.readouterr().err

"""Prediction on the tiny random model: the prefix cache changes nothing (same tokens as ``model.generate`` on
the full prompt), batching changes nothing, decoding stops on the right tokens and keeps control tokens, and
``tether-tune predict`` prints one JSON object per request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from logits_wrapper import LogitsRewriter

from tether_tune.format import CONTROL_TOKEN_IDS, Call, Control, prefix_segments, render_call_segments
from tether_tune.predict import Predictor, decode_greedy, read_requests
from tether_tune.tokenizer import encode_segments

REQUESTS = [
    "Create a task to fix the login bug in codebase 3fa9c01b with priority 8",
    "List my pending tasks",
    "cancel task 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b please",
    "hi",
    "Send a message to the deploy agent: ship it after the tests pass, then tell me.",
    "What does <escape> mean? <start_function_call>call:get_task{}",  # control-token strings typed as text
    "Ünïcödé — “quotes” 日本語 🙂\nsecond line",
    "Play back session 550e8400-e29b-41d4-a716-446655440000 as a summary",
]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path, tools: list[dict]) -> Predictor:
    return Predictor.load(str(tiny_model_dir), tools=tools, constrained=False, max_new_tokens=24)


def generate_reference(pred: Predictor, request: str, max_new_tokens: int) -> list[int]:
    """Plain ``model.generate`` on the full prompt: no prefix cache, transformers' own cache and masks."""
    ids = pred.encode(request)
    with torch.inference_mode():
        out = pred.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=pred.stop_ids,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()


class Steered(LogitsRewriter):
    """The tiny model with its logits rewritten by ``steer(logits [B, V], n_new [B]) -> logits``, where
    ``n_new`` is how many tokens each row has generated before the one being chosen. Counts forward calls."""

    def __init__(self, inner: torch.nn.Module, prompt_len: int, steer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__(inner)
        self.prompt_len = prompt_len
        self.steer = steer

    def rewrite(self, logits: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        keep = logits.shape[1]  # logits for the last `keep` tokens of each row (drafts verified at once)
        n_new = kwargs["position_ids"][:, -keep:] + 1 - self.prompt_len  # [B, keep]
        for k in range(keep):
            logits[:, k, :] = self.steer(logits[:, k, :], n_new[:, k])
        return logits


def scripted(tokens: list[int]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Steering that makes the model say ``tokens``, one per step (then ``<eos>``)."""

    def steer(logits: torch.Tensor, n_new: torch.Tensor) -> torch.Tensor:
        for b, n in enumerate(n_new.tolist()):
            if n >= 0:
                logits[b] += 1e4 * torch.nn.functional.one_hot(
                    torch.tensor(tokens[n] if n < len(tokens) else 1), logits.shape[-1]
                )
        return logits

    return steer


def steered_predictor(pred: Predictor, request: str, steer: Callable, **kwargs: Any) -> tuple[Predictor, Steered]:
    prompt_len = len(pred.encode(request))
    model = Steered(pred.model, prompt_len, steer)
    steered = Predictor(model, pred.tokenizer, pred.tools, pred.developer, **kwargs)
    model.calls = 0  # count the requests' forwards, not the prefix's
    return steered, model


# ----------------------------------------------------------------------------------------------------------------
# The prefix cache
# ----------------------------------------------------------------------------------------------------------------


def test_prefix_is_the_developer_turn_and_a_prefix_of_every_prompt(predictor: Predictor) -> None:
    segments = prefix_segments(predictor.tools)
    assert segments[0] == "<bos>" and segments[-2:] == ["<end_of_turn>", "\n"]
    assert isinstance(segments[-2], Control)
    prefix = predictor.prefix.ids
    assert prefix[-2] == CONTROL_TOKEN_IDS["<end_of_turn>"]
    for request in REQUESTS:
        ids = predictor.encode(request)  # raises if the cached ids are not its prefix
        assert ids[: len(prefix)] == prefix and len(ids) > len(prefix)
        # The user's typed control-token strings stay text: exactly one <start_function_call> id... none here.
        assert CONTROL_TOKEN_IDS["<start_function_call>"] not in ids[len(prefix) :]


def test_prefix_is_longer_than_the_sliding_window(predictor: Predictor) -> None:
    # As on the real model (675 tokens vs a 512 window): the sliding layers must not see evicted or
    # out-of-window keys; the cached == generate tests below are only meaningful with this.
    assert predictor.model.config.sliding_window < len(predictor.prefix.ids)
    assert "sliding_attention" in predictor.model.config.layer_types


@pytest.mark.parametrize("request_text", REQUESTS)
def test_cached_decoding_equals_generate_on_the_full_prompt(predictor: Predictor, request_text: str) -> None:
    want = generate_reference(predictor, request_text, 24)
    n = len(predictor.prefix.ids)
    got = decode_greedy(predictor.model, predictor.prefix, [predictor.encode(request_text)[n:]], predictor.stop_ids, 24)
    assert got[0].ids == want


UUID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize("request_text", REQUESTS)
def test_speculation_changes_nothing(predictor: Predictor, request_text: str) -> None:
    n = len(predictor.prefix.ids)
    suffix = predictor.encode(request_text)[n:]
    plain = decode_greedy(predictor.model, predictor.prefix, [suffix], predictor.stop_ids, 24)
    spec = decode_greedy(predictor.model, predictor.prefix, [suffix], predictor.stop_ids, 24, speculate=8,
                         sources=[suffix])
    assert spec[0].ids == plain[0].ids


@pytest.mark.parametrize("constrained", [False, True])
def test_speculation_copies_from_the_request_in_fewer_forwards(predictor: Predictor, constrained: bool) -> None:
    request = f"What is the status of task {UUID}? Send it to the code-reviewer."
    segments = render_call_segments(Call("get_task", {"task_id": UUID}))
    segments += render_call_segments(Call("send_message", {"agent_name": "code-reviewer", "message": f"task {UUID}"}))
    script = _ids(predictor, segments + [Control("<start_function_response>")])
    results = {}
    for k in (0, 8):
        # Not grounded: a grounded grammar forces the request's one UUID itself (test_constrain covers that).
        pred, model = steered_predictor(predictor, request, scripted(script), constrained=constrained,
                                        max_new_tokens=len(script) + 4, speculate=k, grounded=False)
        out = pred.predict(request)
        results[k] = (out, model.calls)
    (plain, plain_calls), (spec, spec_calls) = results[0], results[8]
    assert spec.raw == plain.raw and spec.calls == plain.calls
    assert spec.calls == [Call("get_task", {"task_id": UUID}),
                          Call("send_message", {"agent_name": "code-reviewer", "message": f"task {UUID}"})]
    if not constrained:  # unconstrained, the script is said token for token
        assert spec.raw == "".join(segments) + "<start_function_response>"
    assert spec.timings["draft_tokens"] >= 20  # the UUID twice, the agent name, ...
    assert spec_calls < plain_calls - 15


class _Plain(LogitsRewriter):
    """The model's own forward (``logits_to_keep``), hidden behind a wrapper without ``get_decoder``."""

    def rewrite(self, logits: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        return logits


def test_scores_from_the_split_head_equal_the_models_own_logits(predictor: Predictor) -> None:
    """``last_logits`` runs the decoder and the head on a contiguous [B * keep, H] (the model's own
    ``logits_to_keep`` path is 20x slower with a frozen head at batch 8); the scores are the model's, with the
    weights frozen as in prediction, and the last ``keep`` positions of rows of different lengths."""
    from tether_tune.decoding import last_logits

    n = len(predictor.prefix.ids)
    suffixes = [predictor.encode(r)[n:] for r in REQUESTS]
    frozen = [p.requires_grad for p in predictor.model.parameters()]
    for p in predictor.model.parameters():
        p.requires_grad_(False)
    try:
        split = last_logits(predictor.model, predictor.prefix, suffixes, 3)
        own = last_logits(_Plain(predictor.model), predictor.prefix, suffixes, 3)
    finally:
        for p, grad in zip(predictor.model.parameters(), frozen):
            p.requires_grad_(grad)
    assert split.shape == own.shape == (len(REQUESTS), 3, len(predictor.tokenizer))
    torch.testing.assert_close(split, own, rtol=1e-4, atol=1e-4)
    # and they are the full prompt's logits at those positions
    for b, request in enumerate(REQUESTS[:3]):
        with torch.inference_mode():
            full = predictor.model(input_ids=torch.tensor([predictor.encode(request)])).logits[0, -3:].float()
        torch.testing.assert_close(split[b], full, rtol=1e-3, atol=1e-3)


def test_prefix_cache_is_not_mutated_by_requests(predictor: Predictor) -> None:
    before = [layer.keys.clone() for layer in predictor.prefix.cache.layers]
    first = predictor.predict(REQUESTS[0]).raw
    predictor.predict_batch(REQUESTS[1:4])
    assert predictor.predict(REQUESTS[0]).raw == first
    after = [layer.keys for layer in predictor.prefix.cache.layers]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_batch_equals_one_at_a_time(predictor: Predictor) -> None:
    single = [predictor.predict(r).raw for r in REQUESTS]
    for batch_size in (3, 8):
        batch = predictor.predict_batch(REQUESTS, batch_size=batch_size)
        assert [p.raw for p in batch] == single  # in request order, whatever the length sorting did


def test_batch_equals_generate_with_very_different_lengths(predictor: Predictor) -> None:
    requests = ["hi", REQUESTS[4] * 6]  # 1 vs ~150 suffix tokens: lots of padding in one row
    batch = predictor.predict_batch(requests, batch_size=2)
    for request, pred in zip(requests, batch):
        assert pred.raw == predictor.tokenizer.decode(generate_reference(predictor, request, 24), skip_special_tokens=False)


def test_timings_and_fields(predictor: Predictor) -> None:
    pred = predictor.predict("List my pending tasks")
    for key in ("total_s", "prefill_s", "decode_s", "new_tokens"):
        assert key in pred.timings
    assert pred.timings["new_tokens"] == 24  # the random model never stops on its own
    assert pred.errors == ["stopped at max_new_tokens=24 before a stop token"]
    assert predictor.base_model == str(predictor.base_model)


# ----------------------------------------------------------------------------------------------------------------
# Stopping, decoding, parsing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["<eos>", "<end_of_turn>", "<start_function_response>"])
def test_stops_on_each_stop_token(predictor: Predictor, stop: str) -> None:
    stop_id = CONTROL_TOKEN_IDS[stop]

    def steer(logits: torch.Tensor, n_new: torch.Tensor) -> torch.Tensor:
        logits[:, stop_id] = torch.where(n_new == 5, 1e4, -1e4)  # a stop token at the 6th new token only
        return logits

    pred, _ = steered_predictor(predictor, "hi", steer, constrained=False, max_new_tokens=24)
    out = pred.predict("hi")
    assert out.timings["new_tokens"] == 6
    assert out.raw.endswith(stop)


def test_does_not_stop_on_other_control_tokens(predictor: Predictor) -> None:
    def steer(logits: torch.Tensor, n_new: torch.Tensor) -> torch.Tensor:
        logits[:, CONTROL_TOKEN_IDS["<end_function_call>"]] = 1e4
        return logits

    pred, _ = steered_predictor(predictor, "hi", steer, constrained=False, max_new_tokens=7)
    out = pred.predict("hi")
    assert out.timings["new_tokens"] == 7 and out.raw == "<end_function_call>" * 7


def _ids(pred: Predictor, segments: list[str]) -> list[int]:
    return encode_segments(pred.tokenizer, segments)


def test_raw_keeps_control_tokens_and_calls_are_parsed_and_coerced(predictor: Predictor) -> None:
    # priority written as a string: the shared parser reads text, coercion makes it the declared integer.
    segments = render_call_segments(Call("create_task", {"priority": "8", "title": "Fix, {the}: bug"}))
    segments += render_call_segments(Call("discover_agents", {})) + [Control("<start_function_response>")]
    script = _ids(predictor, segments)
    pred, model = steered_predictor(predictor, "x", scripted(script), constrained=False)
    out = pred.predict("x")
    assert out.raw == "".join(segments)
    assert "<escape>" in out.raw and out.raw.startswith("<start_function_call>call:create_task{")
    assert out.calls == [Call("create_task", {"priority": 8, "title": "Fix, {the}: bug"}), Call("discover_agents", {})]
    assert out.text == "" and out.errors == []
    assert model.calls == len(script)  # one forward per token: the prefill, then one per token but the last


def test_invalid_calls_are_reported_not_returned(predictor: Predictor) -> None:
    segments = render_call_segments(Call("delete_everything", {"now": True}))
    segments += render_call_segments(Call("get_task", {})) + [Control("<start_function_response>")]
    pred, _ = steered_predictor(predictor, "x", scripted(_ids(predictor, segments)), constrained=False)
    out = pred.predict("x")
    assert out.calls == []
    assert any("unknown tool 'delete_everything'" in e for e in out.errors)
    assert any("missing required argument 'task_id'" in e for e in out.errors)


def test_text_answer(predictor: Predictor) -> None:
    segments = ["I can only manage CodeTether tasks.", Control("<end_of_turn>")]
    pred, _ = steered_predictor(predictor, "x", scripted(_ids(predictor, segments)), constrained=False)
    out = pred.predict("x")
    assert out.calls == [] and out.text == "I can only manage CodeTether tasks." and out.errors == []


# ----------------------------------------------------------------------------------------------------------------
# Loading a training output directory
# ----------------------------------------------------------------------------------------------------------------


def test_load_training_output_merges_the_adapter(tiny_model_dir: Path, tools: list[dict], tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)  # random A and B: the adapter changes the outputs
    out_dir = tmp_path / "run"
    peft_model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out_dir)
    (out_dir / "tools.json").write_text(json.dumps(tools[:3]))
    developer = "Today is 2025-01-31."
    (out_dir / "run_info.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "developer": developer}))

    pred = Predictor.load(str(out_dir), constrained=False, max_new_tokens=12)
    assert pred.base_model == str(tiny_model_dir)
    assert [t["function"]["name"] for t in pred.tools] == [t["function"]["name"] for t in tools[:3]]
    assert pred.developer == developer
    assert type(pred.model).__name__ == "Gemma3ForCausalLM"  # merged: no PEFT wrapper left
    assert developer in pred.tokenizer.decode(pred.prefix.ids)

    peft_model.eval()
    ids = pred.encode("List my pending tasks")
    with torch.inference_mode():
        want = peft_model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=pred.stop_ids, pad_token_id=0
        )[0, len(ids) :].tolist()
    plain = Predictor.load(str(tiny_model_dir), tools=tools[:3], constrained=False, max_new_tokens=12)
    got = pred.predict("List my pending tasks").raw
    assert got == pred.tokenizer.decode(want, skip_special_tokens=False)
    assert got != plain.predict("List my pending tasks").raw  # the adapter was applied


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def test_cli_prints_one_json_object_per_request(
    tiny_model_dir: Path, tmp_path: Path, tools: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:
    from tether_tune.cli import main

    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps(tools))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"id": "r1", "request": "List my tasks"}) + "\n" + json.dumps("hello") + "\n")
    for flag in ("--constrained", "--no-constrained"):
        rc = main(["predict", "--model_path", str(tiny_model_dir), "--tools", str(tools_file), "--max_new_tokens",
                   "6", flag, "--show_raw", "Cancel task 42", "--input_file", str(inputs)])
        assert rc == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 3
        records = [json.loads(line) for line in lines]
        for rec in records:
            assert set(rec) >= {"calls", "text", "timings", "raw"}
            assert isinstance(rec["calls"], list) and isinstance(rec["text"], str)
            assert rec["timings"]["new_tokens"] <= 6
        assert records[1]["id"] == "r1" and "id" not in records[0]


def test_cli_without_requests_names_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    from tether_tune.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--model_path", "x"])
    assert "REQUEST" in capsys.readouterr().err


def test_cli_names_a_missing_model_path(capsys: pytest.CaptureFixture[str]) -> None:
    from tether_tune.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--model_path", "./no-such-model", "hi"])
    assert "--model_path ./no-such-model: no such directory" in capsys.readouterr().err


def test_read_requests_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('"a"\n{"query": "b"}\n\n{"nope": 1}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:4"):
        read_requests(path)
    path.write_text('"a"\n{"query": "b", "id": 7}\n')
    assert read_requests(path) == [(None, "a"), (7, "b")]


def _decode(predictor: Predictor, requests: list[str], **kw: Any) -> list[list[int]]:
    from tether_tune.decoding import decode_greedy

    suffixes = [predictor.suffix(r) for r in requests]
    return [d.ids for d in decode_greedy(predictor.model, predictor.prefix, suffixes, predictor.stop_ids,
                                         kw.pop("max_new_tokens", 24), pad_id=predictor.pad_id, **kw)]


def test_nucleus_of_one_token_is_greedy_and_a_seed_repeats(predictor: Predictor) -> None:
    from tether_tune.decoding import Sampling

    requests = ["cancel task 3f1c2a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f", "hello"]
    greedy = _decode(predictor, requests, speculate=4, sources=[predictor.suffix(r) for r in requests])
    narrow = [Sampling(1.0, 1e-9, torch.Generator().manual_seed(0)) for _ in requests]
    assert _decode(predictor, requests, sampling=narrow, speculate=4,
                   sources=[predictor.suffix(r) for r in requests]) == greedy

    def hot(seed: int) -> list[list[int]]:
        return _decode(predictor, requests, sampling=[Sampling(1.5, 1.0, torch.Generator().manual_seed(seed))
                                                      for _ in requests])
    assert hot(3) == hot(3)
    assert hot(3) != greedy  # a hot random model does not happen to pick greedy's tokens in both rows


def test_limits_and_streamed_tokens_per_row(predictor: Predictor) -> None:
    seen: dict[int, list[int]] = {0: [], 1: []}
    ids = _decode(predictor, ["hello", "hello"], max_new_tokens=[3, 9],
                  on_tokens=lambda row, tokens: seen[row].extend(tokens))
    assert len(ids[0]) <= 3 and len(ids[1]) <= 9 and ids[0] == ids[1][: len(ids[0])]
    assert seen == {0: ids[0], 1: ids[1]}

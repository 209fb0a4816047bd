"""The latency levers on the tiny random model: each keeps the output (the restricted head, the call draft) or
keeps it valid (bf16 weights), and each does what it is for (fewer head rows, fewer forwards)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tether_tune.decoding import Biases, Head
from tether_tune.predict import Predictor
from tether_tune.tools import validate_call

REQUESTS = [
    "Create a task to fix the login bug in codebase 3fa9c01b with priority 8",
    "List my pending tasks",
    "cancel task 3f2a9c1e-7b4d-4e8f-9a6b-0c1d2e3f4a5b please",
    "Send a message to the deploy agent: ship it after the tests pass, then tell me.",
    "Play back session 550e8400-e29b-41d4-a716-446655440000 as a summary",
    "hi",
]


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path, tools: list[dict]) -> Predictor:
    return Predictor.load(str(tiny_model_dir), tools=tools, constrained=True, max_new_tokens=40, head_limit=0)


def variant(pred: Predictor, **kwargs) -> Predictor:
    """The same loaded model and grammar, other decoding settings."""
    out = copy.copy(pred)
    for key, value in kwargs.items():
        assert hasattr(out, key), key  # a setting the predictor no longer has would be ignored
        setattr(out, key, value)
    return out


class CountRows:
    """Counts how often the head is computed for a few rows and for all of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.rows = self.full = 0
        rows, full = Head.rows, Head.full

        def count_rows(head, hidden, ids):
            self.rows += 1
            return rows(head, hidden, ids)

        def count_full(head, hidden):
            self.full += hidden.shape[0] if hidden.dim() > 1 else 1
            return full(head, hidden)

        monkeypatch.setattr(Head, "rows", count_rows)
        monkeypatch.setattr(Head, "full", count_full)


# ----------------------------------------------------------------------------------------------------------------
# The restricted head
# ----------------------------------------------------------------------------------------------------------------


def test_head_equals_the_models_logits_and_rows_equal_the_full_head(base: Predictor) -> None:
    model = base.model
    ids = torch.tensor([base.encode("List my pending tasks")])
    with torch.inference_mode():
        want = model(input_ids=ids).logits[0].float()
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0]
        head = Head(model, limit=16)
        assert torch.allclose(head.full(hidden), want, atol=1e-5, rtol=1e-5)
        some = torch.tensor([0, 5, 52, 100, int(want[-1].argmax())])
        assert torch.allclose(head.rows(hidden[-1], some), want[-1, some], atol=1e-5, rtol=1e-5)


def test_head_applies_the_final_softcap(base: Predictor) -> None:
    model = copy.deepcopy(base.model)
    model.config.final_logit_softcapping = 0.5  # small: every score is bent
    ids = torch.tensor([base.encode("hi")])
    with torch.inference_mode():
        want = model(input_ids=ids).logits[0, -1].float()
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0, -1]
        head = Head(model, limit=16)
        assert want.abs().max() <= 0.5
        assert torch.allclose(head.full(hidden), want, atol=1e-6)
        assert torch.allclose(head.rows(hidden, torch.tensor([3, 7])), want[[3, 7]], atol=1e-6)


def test_a_wrapped_model_is_not_split() -> None:
    assert Head.of(torch.nn.Linear(2, 2), limit=100) is None
    with pytest.raises(AttributeError):
        Head(torch.nn.Linear(2, 2), limit=100)


@pytest.mark.parametrize("call_bias", [30.0, 0.0, -30.0])  # calls, whatever the model says, words
@pytest.mark.parametrize("limit", [8, 100_000])  # the tiny vocabulary is 640: above it, rows everywhere
def test_restricted_head_makes_the_full_heads_choices(base: Predictor, monkeypatch: pytest.MonkeyPatch,
                                                      call_bias: float, limit: int) -> None:
    full = variant(base, biases=Biases(call=call_bias, next_call=-30.0))
    want = [p.raw for p in full.predict_batch(REQUESTS, batch_size=1)]
    counts = CountRows(monkeypatch)
    restricted = variant(full, head_limit=limit)
    got = [p.raw for p in restricted.predict_batch(REQUESTS, batch_size=1)]
    assert got == want
    if call_bias > 0:  # calls: tool and argument names, spans: few tokens each (every request's tool name at least;
        assert counts.rows >= len(REQUESTS)  # the one enum member a request states is forced, no choice)
    if call_bias < 0 and limit < len(base.tokenizer):  # words: any text, the whole head every time
        assert counts.rows == 0 and counts.full > 0
    if limit > len(base.tokenizer):  # every choice scored row by row, the whole vocabulary included
        assert counts.full == 0 and counts.rows > 0


def test_restricted_head_in_a_batch_and_with_drafts(base: Predictor) -> None:
    full = variant(base, biases=Biases(call=30.0, next_call=-30.0), speculate=0)
    want = [p.raw for p in full.predict_batch(REQUESTS, batch_size=1)]
    for speculate, batch in ((8, 1), (0, 4), (8, 4)):
        fast = variant(full, head_limit=4096, speculate=speculate)
        assert [p.raw for p in fast.predict_batch(REQUESTS, batch_size=batch)] == want


def test_restricted_head_skips_the_head_where_drafts_are_rejected(base: Predictor, monkeypatch) -> None:
    """The whole head runs at most once per forward and row, for the positions still undecided: rejected drafts
    after a fresh choice cost no head rows at all."""
    counts = CountRows(monkeypatch)
    pred = variant(base, biases=Biases(call=-30.0), head_limit=4096, speculate=8)  # words: every position a full head
    outs = [pred.predict(r) for r in REQUESTS]
    forwards = sum(o.timings["forward_calls"] for o in outs)
    tokens = sum(o.timings["new_tokens"] for o in outs)
    assert counts.full <= tokens + sum(o.timings["draft_tokens"] for o in outs) + forwards


# ----------------------------------------------------------------------------------------------------------------
# The call draft
# ----------------------------------------------------------------------------------------------------------------


def test_the_call_draft_saves_the_forward_of_the_first_choice(base: Predictor) -> None:
    """With drafts on, the first forward also feeds <start_function_call>call: so a call's tool-name choice
    comes out of the prefill: one forward fewer per call, the same tokens."""
    for request in REQUESTS:
        plain = variant(base, biases=Biases(call=30.0, next_call=-30.0), speculate=0).predict(request)
        drafted = variant(base, biases=Biases(call=30.0, next_call=-30.0), speculate=8).predict(request)
        assert drafted.raw == plain.raw
        assert drafted.timings["forward_calls"] <= plain.timings["forward_calls"] - 1
        words = variant(base, biases=Biases(call=-30.0), speculate=8).predict(request)  # the draft is refused: no cost
        assert words.raw == variant(base, biases=Biases(call=-30.0), speculate=0).predict(request).raw
        assert not words.calls


def test_continuation_is_the_token_and_what_the_grammar_forces(base: Predictor) -> None:
    from tether_tune.decoding import START_CALL_ID

    constraint = base.constraint
    matcher = constraint.matcher("List my pending tasks")
    cont = constraint.continuation(matcher, [START_CALL_ID])
    assert cont[0] == START_CALL_ID and base.tokenizer.decode(cont[1:]) == "call:"
    assert constraint.continuation(matcher, [base.tokenizer.convert_tokens_to_ids("<end_function_call>")]) is None
    # the matcher itself has not moved: the call token is still its first choice
    assert constraint.advance(matcher, START_CALL_ID) == cont[1:]


# ----------------------------------------------------------------------------------------------------------------
# bf16 weights
# ----------------------------------------------------------------------------------------------------------------


def test_bf16_weights_give_valid_calls(tiny_model_dir: Path, tools: list[dict]) -> None:
    pred = Predictor.load(str(tiny_model_dir), tools=tools, dtype="bfloat16", max_new_tokens=200, call_bias=30.0,
                          next_call_bias=-30.0)
    assert next(pred.model.parameters()).dtype == torch.bfloat16
    for out in pred.predict_batch(REQUESTS, batch_size=2):
        assert out.errors == [] and out.calls, out.raw
        assert all(validate_call(c, pred.tools) == [] for c in out.calls)


def test_prefix_cache_of_restricted_decoding_is_untouched(base: Predictor) -> None:
    before = [layer.keys.clone() for layer in base.prefix.cache.layers]
    variant(base, head_limit=4096, biases=Biases(call=30.0)).predict(REQUESTS[0])
    assert all(torch.equal(a, layer.keys) for a, layer in zip(before, base.prefix.cache.layers))


def test_auto_dtype_for_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    from tether_tune.config import ConfigError
    from tether_tune.modeling import inference_dtype

    assert inference_dtype("float32", "cpu") == "float32" and inference_dtype("bfloat16", "cpu") == "bfloat16"
    monkeypatch.delenv("TETHER_TUNE_INFERENCE_DTYPE", raising=False)
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert inference_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    monkeypatch.setenv("TETHER_TUNE_INFERENCE_DTYPE", "float16")
    with pytest.raises(ConfigError, match="overflow"):
        inference_dtype("auto", "cpu")

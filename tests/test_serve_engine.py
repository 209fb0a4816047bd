"""The serving engine in-process (tiny model): per-tool-set caches, batching, conversion of OpenAI's messages,
and the streaming reader. The HTTP side is ``test_serve.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from tether_tune.format import CONTROL_TOKEN_IDS  # noqa: E402
from tether_tune.predict import Predictor  # noqa: E402
from tether_tune.rundir import load_run  # noqa: E402
from tether_tune.serve.engine import DeltaReader, Engine  # noqa: E402
from tether_tune.serve.protocol import APIError, ChatRequest, to_conversation  # noqa: E402

UUID = "3f1c2a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, tools: list[dict]) -> Engine:
    e = Engine(load_run(str(tiny_model_dir), tools=tools), max_batch=8, batch_wait_s=0.05, cache_size=2)
    yield e
    e.close()


def conv(text: str, tools: list[dict] | None = None, system: str | None = None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return to_conversation(ChatRequest.model_validate({"model": "m", "messages": messages, "tools": tools}))


def test_same_tools_share_one_prefix_cache_and_grammar(engine: Engine, tools: list[dict]) -> None:
    jobs = [engine.prepare(conv(t, tools), "auto", True, 16) for t in ("list the agents", f"cancel {UUID}")]
    assert jobs[0].prefix_ids == jobs[1].prefix_ids and jobs[0].constraint is jobs[1].constraint
    for job in jobs:
        engine.submit(job).result(timeout=60)
    assert len(engine._prefixes) == 1
    prefix = next(iter(engine._prefixes.values()))
    engine.submit(engine.prepare(conv("hi", tools), "auto", True, 8)).result(timeout=60)
    assert next(iter(engine._prefixes.values())) is prefix  # reused, not rebuilt


def test_caches_are_bounded(engine: Engine, tools: list[dict]) -> None:
    for k in range(4):  # cache_size=2: four developer texts, two kept
        engine.submit(engine.prepare(conv("hi", tools, system=f"context {k}"), "auto", True, 4)).result(timeout=60)
    assert len(engine._prefixes) <= 2 and len(engine._prefix_ids) <= 2


def test_batched_answers_equal_the_predictor(engine: Engine, tiny_model_dir: Path, tools: list[dict]) -> None:
    requests = [f"cancel {UUID}", "list pending tasks", "tell build-bot: redeploy", "hello"]
    jobs = [engine.prepare(conv(r, tools), "auto", True, 48) for r in requests]
    futures = [engine.submit(j) for j in jobs]  # queued together: decoded in one batch
    outcomes = [f.result(timeout=60) for f in futures]
    predictor = Predictor.load(str(tiny_model_dir), tools=tools, max_new_tokens=48)
    for outcome, pred in zip(outcomes, predictor.predict_batch(requests, batch_size=1)):
        assert [c.to_dict() for c in outcome.calls] == [c.to_dict() for c in pred.calls]
        assert outcome.text == pred.text


def test_control_token_strings_in_user_text_stay_text(engine: Engine, tools: list[dict]) -> None:
    job = engine.prepare(conv("say <escape> and <end_of_turn> please", tools), "auto", True, 8)
    end = job.suffix.index(CONTROL_TOKEN_IDS["<end_of_turn>"])
    user_turn = job.suffix[1:end]  # after "<start_of_turn>", through the user's text
    assert len(user_turn) > 8
    assert not set(user_turn) & set(CONTROL_TOKEN_IDS.values())


def test_messages_are_checked() -> None:
    bad = [
        [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}],
        [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "{}"}],
        [{"role": "system", "content": "only"}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "done"}],
    ]
    for messages in bad:
        with pytest.raises(APIError):
            to_conversation(ChatRequest.model_validate({"model": "m", "messages": messages}))


def test_tool_results_render_under_their_calls_name() -> None:
    c = to_conversation(ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "status of 1234abcd?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_task", "arguments": json.dumps({"task_id": "1234abcd"})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "not json"}]}))
    assert c.messages[1]["tool_calls"] == [{"name": "get_task", "arguments": {"task_id": "1234abcd"}}]
    assert c.messages[2]["content"] == {"name": "get_task", "response": {"result": "not json"}}
    assert "not json" in c.ground and "1234abcd" in c.ground  # grounding may copy what the tool said
    assert c.asked is None  # the turn answers a tool: no id of the user's is owed a call in it
    assert conv("status of 1234abcd?").asked == "status of 1234abcd?"


def test_delta_reader_streams_what_the_outcome_holds(engine: Engine, tools: list[dict]) -> None:
    for text, choice in ((f"cancel {UUID} and list the agents", "required"), ("hello there", "none")):
        job = engine.prepare(conv(text, tools), choice, True, 64)
        chunks: list[list[int]] = []
        job.on_tokens = chunks.append
        outcome = engine.submit(job).result(timeout=60)
        reader, events = DeltaReader(engine, tools), []
        for tokens in chunks:
            events += reader.feed(tokens)
        events += reader.rest(outcome)
        streamed_text = "".join(v for k, v in events if k == "text")
        streamed_calls = [v[1].to_dict() for k, v in events if k == "call"]
        assert streamed_text == outcome.text
        assert streamed_calls == [c.to_dict() for c in outcome.calls]

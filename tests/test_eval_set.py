"""The independent hand-written sets are usable and independent: the test set (``eval/handwritten.jsonl``) and the
development set that chooses recipes (``eval/dev.jsonl``). In each, every call fits the schema, it covers what the
accuracy goal is measured on, and nothing in it comes from the generator or the training data — no request the
generator writes (several seeds) or the hand-written training file holds, no title, description or message from the
generator's value pools, no id the training data uses. The two sets share no request and no id."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tether_tune.checks import check_example
from tether_tune.data import read_examples
from tether_tune.synth import generate_examples
from tether_tune.synth import values as pools
from tether_tune.text import normalize_text
from tether_tune.tools import load_tools, tool_map

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "eval" / "handwritten.jsonl"
DEV = ROOT / "eval" / "dev.jsonl"
#: The hand-written files that are trained on: the original 68 examples and the hand-written training set.
TRAINING_FILES = (ROOT / "training_examples.jsonl", ROOT / "data" / "handwritten_train.jsonl")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TEXT_ARGS = ("title", "description", "message")


def _read(path: Path):
    examples, errors = read_examples(path, strict=True)
    assert not errors
    return examples


@pytest.fixture(scope="module", params=[EVAL, DEV], ids=["test", "dev"])
def handwritten(request):
    return _read(request.param)


@pytest.fixture(scope="module")
def generated():
    tools = load_tools()
    return [ex for seed in range(5) for ex in generate_examples(None, seed, tools)]


def test_every_call_fits_the_schema(handwritten):
    tools = load_tools()
    problems = [f"{ex.source}: {p}" for ex in handwritten for p in check_example(ex, tools, grounding=False)]
    assert problems == []
    assert len({ex.id for ex in handwritten}) == len(handwritten)


def test_it_covers_every_tool_no_calls_and_multi_calls(handwritten):
    n = len(handwritten)
    assert n >= 150
    tools = Counter(c.name for ex in handwritten for c in ex.calls)
    assert set(tools) == set(tool_map(load_tools()))
    assert sum(not ex.calls for ex in handwritten) >= 0.2 * n
    assert sum(len(ex.calls) > 1 for ex in handwritten) >= 25
    assert all(ex.tags for ex in handwritten)


def test_no_request_comes_from_the_generator_or_the_training_files(handwritten, generated):
    training = [ex for path in TRAINING_FILES for ex in _read(path)]
    seen = {normalize_text(ex.request): ex.source or "generated" for ex in [*training, *generated]}
    overlap = [(ex.id, ex.request) for ex in handwritten if normalize_text(ex.request) in seen]
    assert overlap == []


def test_no_value_comes_from_the_generator_pools(handwritten):
    pool = {normalize_text(t) for pair in pools.TASKS for t in pair}
    pool |= {normalize_text(m) for m in [*pools.MESSAGES_DO, *pools.MESSAGES_KNOW]}
    hits = [(ex.id, v) for ex in handwritten for acc in ex.acceptable_values() for k, values in acc.items()
            if k in TEXT_ARGS for v in values if normalize_text(str(v)) in pool]
    assert hits == []


def test_no_title_or_message_comes_from_the_hand_written_training_set(handwritten):
    trained = {normalize_text(str(v)) for ex in _read(TRAINING_FILES[1]) for acc in ex.acceptable_values()
               for k, values in acc.items() if k in TEXT_ARGS for v in values}
    hits = [(ex.id, v) for ex in handwritten for acc in ex.acceptable_values() for k, values in acc.items()
            if k in TEXT_ARGS for v in values if normalize_text(str(v)) in trained]
    assert trained and hits == []


def test_no_id_is_shared_with_the_training_data(handwritten, generated):
    training_text = "".join(path.read_text() for path in TRAINING_FILES)
    training_ids = set(UUID.findall(training_text)) | {u for ex in generated for u in UUID.findall(ex.request)}
    eval_ids = {u for ex in handwritten for u in UUID.findall(ex.request)}
    assert eval_ids and not eval_ids & training_ids


def test_the_dev_set_shares_no_request_and_no_id_with_the_test_set():
    test, dev = _read(EVAL), _read(DEV)
    assert not {normalize_text(ex.request) for ex in test} & {normalize_text(ex.request) for ex in dev}
    ids = [{u for ex in examples for u in UUID.findall(ex.request)} for examples in (test, dev)]
    assert ids[1] and not ids[0] & ids[1]
    codebases = [{str(v) for ex in examples for acc in ex.acceptable_values() for v in acc.get("codebase_id", [])}
                 - {"global"} for examples in (test, dev)]
    assert not codebases[0] & codebases[1]

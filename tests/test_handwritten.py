"""The 68 hand-written examples in training_examples.jsonl: counts, canonical targets, real values, grounding."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

from tether_tune.checks import check_example, dedupe_key
from tether_tune.data import read_examples
from tether_tune.validate import ValidateConfig, run_validate

REPO_ROOT = Path(__file__).resolve().parents[1]
PATH = REPO_ROOT / "training_examples.jsonl"
EXPECTED = {"create_task": 16, "list_tasks": 10, "get_task": 8, "cancel_task": 8, "send_message": 8,
            "discover_agents": 7, "get_session_history": 6, "playback_session": 5}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
CODEBASE = re.compile(r"([0-9a-f]{8}|global)\Z")
ROLE = re.compile(r"[a-z]+(-[a-z]+)*\Z")


@pytest.fixture(scope="module")
def examples():
    return read_examples(PATH, strict=True)[0]


def test_68_lines_with_the_original_mix_of_tools(examples):
    lines = PATH.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 68 and len(examples) == 68
    assert all(len(ex.calls) == 1 for ex in examples)
    assert collections.Counter(ex.calls[0].name for ex in examples) == EXPECTED


def test_every_line_is_exactly_what_to_original_writes(examples):
    # Canonical: keys sorted, integers bare, `call:discover_agents{}`; only "input" and "output".
    for line, ex in zip(PATH.read_text(encoding="utf-8").splitlines(), examples):
        assert line == json.dumps(ex.to_original(), ensure_ascii=False)
    assert "call:discover_agents{}<end_function_call>" in PATH.read_text(encoding="utf-8")


def test_every_target_validates_and_is_grounded(examples, tools):
    problems = {ex.source: check_example(ex, tools, grounding=True) for ex in examples}
    assert {k: v for k, v in problems.items() if v} == {}


def test_values_look_real(examples):
    for ex in examples:
        args = ex.calls[0].arguments
        for key in ("task_id", "session_id"):
            if key in args:
                assert UUID.match(args[key]), (ex.source, args[key])
        if "codebase_id" in args:
            assert CODEBASE.match(args["codebase_id"]), (ex.source, args["codebase_id"])
        if "agent_name" in args:
            assert ROLE.match(args["agent_name"]), (ex.source, args["agent_name"])
        if "priority" in args:
            assert type(args["priority"]) is int and 0 <= args["priority"] <= 10


def test_no_duplicates_and_varied(examples):
    keys = [dedupe_key(ex) for ex in examples]
    assert len(set(keys)) == len(keys)
    # typed and spoken styles both present
    assert any(ex.request[0].isupper() and ex.request[-1] in ".?" for ex in examples)
    assert sum(ex.request.startswith(("um ", "uh ")) or " uh " in ex.request for ex in examples) >= 5


def test_tether_tune_validate_reports_no_problem(capsys):
    assert run_validate(ValidateConfig(files=[str(PATH)], tools=str(REPO_ROOT / "codetether_tools.json"))) == 0
    assert "68 examples, 0 problems" in capsys.readouterr().out

"""The generator: exact counts, determinism, honest targets, held-out splits, and the checks that catch the old
data's defects (each fed a deliberately broken example)."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether_tune import synth as T  # the phrasings and value pools, re-exported by the package
from tether_tune.synth import generate as synth  # generate_splits calls its make_example (monkeypatched below)
from tether_tune.config import parse_config
from tether_tune.checks import check_example, dedupe_key, number_stated
from tether_tune.data import DataError, Example, read_examples
from tether_tune.validate import ValidateConfig, run_validate
from tether_tune.format import Call
from tether_tune.synth import (
    DEFAULT_COUNTS,
    FAMILIES,
    GenerateConfig,
    GenerateError,
    allocate,
    duplicate_problems,
    enum_words,
    family_of,
    generate_examples,
    generate_splits,
    parse_split,
    split_problems,
    unstated_enum_words,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS_FILE = str(REPO_ROOT / "codetether_tools.json")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
CODEBASE = re.compile(r"([0-9a-f]{8}|global)\Z")
ROLE = re.compile(r"[a-z]+(-[a-z]+)*\Z")
SPLIT3 = {"train": 0.8, "val": 0.1, "test": 0.1}
TASK = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"


def _generate(tmp_path: Path, name: str, *flags: str) -> Path:
    out = tmp_path / name
    cmd = [sys.executable, str(REPO_ROOT / "generate_dataset.py"), *flags, "--output", str(out), "--tools", TOOLS_FILE]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def _per_family(examples) -> dict[str, int]:
    per = {f: 0 for f in FAMILIES}
    for ex in examples:
        per[family_of(ex)] += 1
    return per


def _assert_honest(ex: Example, tools) -> None:
    """Schema, grounding, and the stricter rules the generator keeps: free text and ids appear in the request
    exactly as in the target, ids look real, and no enum word is said without its argument."""
    assert check_example(ex, tools) == [], (ex.template, ex.request)
    for call in ex.calls:
        for key, value in call.arguments.items():
            if key in ("task_id", "session_id"):
                assert UUID.match(value) and value in ex.request
            elif key == "codebase_id":
                assert CODEBASE.match(value) and value in ex.request
            elif key in ("title", "description", "message"):
                assert value in ex.request, (key, value, ex.request)
            elif key == "agent_name":
                assert ROLE.match(value) and (value in ex.request or value.replace("-", " ") in ex.request)
            elif key == "priority":
                assert number_stated(value, ex.request.lower()), ex.request
    assert unstated_enum_words(ex.request, ex.calls) == [], ex.request
    assert ex.template and (ex.calls or ex.text)


# --------------------------------------------------------------------------------------------------------------
# The real script
# --------------------------------------------------------------------------------------------------------------


def test_script_produces_exactly_the_counts_asked_and_only_valid_examples(tmp_path, tools):
    out = _generate(tmp_path, "x.jsonl", "--create-task", "100", "--list-tasks", "50", "--get-task", "50")
    examples, errors = read_examples(out, strict=True)
    assert errors == []
    # given counts exactly; the others at their documented defaults
    assert _per_family(examples) == {**DEFAULT_COUNTS, "create_task": 100, "list_tasks": 50, "get_task": 50}
    for ex in examples:
        _assert_honest(ex, tools)
    assert duplicate_problems(examples) == []
    assert all(json.loads(line).keys() == {"input", "output", "id", "template"} for line in out.read_text().splitlines())
    assert run_validate(ValidateConfig(files=[str(out)], tools=TOOLS_FILE)) == 0
    # the resolved config is saved beside the data
    assert json.loads((tmp_path / "x.config.json").read_text())["create_task"] == 100


def test_script_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = _generate(tmp_path, "a.jsonl", "--seed", "7", "--no-call", "20", "--parallel", "10")
    b = _generate(tmp_path, "b.jsonl", "--seed", "7", "--no-call", "20", "--parallel", "10")
    c = _generate(tmp_path, "c.jsonl", "--seed", "8", "--no-call", "20", "--parallel", "10")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_script_split_writes_three_files_with_held_out_templates_and_values(tmp_path, tools):
    _generate(tmp_path, "d.jsonl", "--split", "0.8,0.1,0.1", "--format", "gold")
    splits = {name: read_examples(tmp_path / f"d.{name}.jsonl", strict=True)[0] for name in SPLIT3}
    assert not (tmp_path / "d.jsonl").exists()
    assert split_problems(splits) == []
    total = collections.Counter()
    for name, examples in splits.items():
        total.update(_per_family(examples))
        for ex in examples:
            assert ex.id.startswith(name) and check_example(ex, tools) == []
    assert dict(total) == DEFAULT_COUNTS
    assert len(splits["test"]) == pytest.approx(0.1 * sum(DEFAULT_COUNTS.values()), abs=6)


def test_included_examples_join_train_only_and_train_size_keeps_held_out_splits(tmp_path, tools):
    """--include adds hand-written examples to the train split as they are; --train_size keeps a seeded part of the
    generated train split; val and test are byte for byte what the split alone writes."""
    hand = tmp_path / "hand.jsonl"
    uuid = "5d7f5c1e-9a0b-4c2d-8e3f-1a2b3c4d5e6f"
    hand.write_text(
        json.dumps({"query": f"nuke {uuid} pls", "calls": [{"name": "cancel_task", "arguments": {"task_id": [uuid]}}]}) + "\n"
        + json.dumps({"query": "rename the builder agent", "calls": [], "answer": "Sorry, I can't do that."}) + "\n")
    flags = ("--split", "0.8,0.1,0.1", "--no-call", "20", "--parallel", "10", "--seed", "3")
    _generate(tmp_path, "plain.jsonl", *flags)
    _generate(tmp_path, "mixed.jsonl", *flags, "--train_size", "300", "--include", str(hand))
    for name in ("val", "test"):
        assert (tmp_path / f"mixed.{name}.jsonl").read_bytes() == (tmp_path / f"plain.{name}.jsonl").read_bytes()
    plain = read_examples(tmp_path / "plain.train.jsonl")[0]
    mixed = read_examples(tmp_path / "mixed.train.jsonl")[0]
    assert len(mixed) == 302
    generated = [ex for ex in mixed if ex.id.startswith("train-")]
    assert len(generated) == 300 and {ex.request for ex in generated} <= {ex.request for ex in plain}
    hand_written = {ex.request: ex for ex in mixed if ex.id.startswith("hand-")}
    assert hand_written[f"nuke {uuid} pls"].calls == [Call("cancel_task", {"task_id": uuid})]
    assert hand_written["rename the builder agent"].text == "Sorry, I can't do that."
    again = _generate(tmp_path, "again.jsonl", *flags, "--train_size", "300", "--include", str(hand))
    assert (tmp_path / "again.train.jsonl").read_bytes() == (tmp_path / "mixed.train.jsonl").read_bytes(), again


@pytest.mark.parametrize("line, fragment", [
    ({"query": "cancel task 42", "calls": [{"name": "cancel_task", "arguments": {"task_id": ["42"]}}]}, "not the shape"),
    ({"query": "never mind", "calls": []}, "no words answer"),
    ({"query": "hi there", "calls": [], "answer": "Hi!"}, "the same request as"),
])
def test_an_included_example_that_breaks_a_rule_stops_the_run_at_its_line(tmp_path, line, fragment):
    hand = tmp_path / "hand.jsonl"
    hand.write_text(json.dumps({"query": "Hi there", "calls": [], "answer": "Hi!"}) + "\n" + json.dumps(line) + "\n")
    cmd = [sys.executable, str(REPO_ROOT / "generate_dataset.py"), "--no-call", "5", "--parallel", "5",
           "--include", str(hand), "--output", str(tmp_path / "x.jsonl"), "--tools", TOOLS_FILE]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and f"{hand}:2" in result.stderr and fragment in result.stderr, result.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_flags_accept_dashes_and_check_values():
    cfg = parse_config(GenerateConfig, ["--create-task", "5", "--no-call", "2", "--playback_session", "0"])
    assert (cfg.create_task, cfg.no_call, cfg.playback_session, cfg.list_tasks) == (5, 2, 0, None)
    for bad in (["--get-task", "-1"], ["--split", "0.5,0.1"], ["--split", "0.8,0.1,0.1,0"], ["--split_dir", "x"],
                ["--format", "csv"], ["--output", "x.json"]):
        with pytest.raises(SystemExit):
            parse_config(GenerateConfig, bad)


# --------------------------------------------------------------------------------------------------------------
# The library
# --------------------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), counts=st.fixed_dictionaries({f: st.integers(0, 6) for f in FAMILIES}))
def test_any_seed_gives_exact_counts_of_grounded_valid_examples(tools, seed, counts):
    examples = generate_examples(counts, seed, tools)
    assert _per_family(examples) == counts
    for ex in examples:
        _assert_honest(ex, tools)
    assert duplicate_problems(examples) == []
    assert [e.to_original() for e in generate_examples(counts, seed)] == [e.to_original() for e in examples]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_any_seed_splits_cleanly(tools, seed):
    splits = generate_splits({"create_task": 40, "send_message": 30, "no_call": 20}, seed, SPLIT3, tools)
    assert split_problems(splits) == []
    train, test = splits["train"], splits["test"]
    # held-out values: no agent role, title or message of test is ever seen in train
    for key in ("agent_name", "title", "message"):
        seen = {c.arguments[key].lower() for ex in train for c in ex.calls if key in c.arguments}
        held = {c.arguments[key].lower() for ex in test for c in ex.calls if key in c.arguments}
        assert not (seen & held), key
    assert sum(len(v) for v in splits.values()) == 40 + 30 + 20 + sum(
        DEFAULT_COUNTS[f] for f in FAMILIES if f not in ("create_task", "send_message", "no_call"))


def test_the_default_mix():
    examples = generate_examples()
    n = len(examples)
    assert n == sum(DEFAULT_COUNTS.values()) and 800 <= n <= 1200
    assert DEFAULT_COUNTS["no_call"] / n >= 0.20 and DEFAULT_COUNTS["parallel"] / n >= 0.10
    assert all(len(ex.calls) in (2, 3) for ex in examples if family_of(ex) == "parallel")
    # every optional argument both present and absent, and every enum value used
    args = collections.defaultdict(collections.Counter)
    for ex in examples:
        for c in ex.calls:
            for k, v in c.arguments.items():
                args[c.name][k] += 1
                args[c.name][(k, v)] += 1
    for tool, opts in synth.PRESENCE.items():
        calls = sum(1 for ex in examples for c in ex.calls if c.name == tool)
        for arg in opts:
            assert 0 < args[tool][arg] < calls, (tool, arg)
    for arg, values in synth.ENUMS.items():
        tool = {"status": "list_tasks", "agent_type": "create_task", "style": "playback_session"}[arg]
        assert all(args[tool][(arg, v)] for v in values), arg
    # variety: many templates per tool, spoken and typed requests, no-call kinds all present
    templates = collections.Counter(ex.template.rsplit(".", 1)[0] for ex in examples)
    assert all(templates[t] > 0 for t in synth.TOOLS)
    assert len({ex.template for ex in examples}) > 120
    assert sum(ex.request == ex.request.lower() for ex in examples) > n // 5
    assert {ex.template.split(".")[1] for ex in examples if not ex.calls} == set(T.NO_CALL)


def test_no_call_answers_are_words_and_vague_requests_ask_for_what_is_missing():
    examples = generate_examples({f: 0 for f in FAMILIES} | {"no_call": 60}, seed=3)
    assert all(ex.calls == [] and ex.text and "<start_function_call>" not in ex.text for ex in examples)
    vague = [ex for ex in examples if ex.template.startswith("no_call.vague")]
    assert vague and all(not re.search(r"[0-9a-f]{8}-", ex.request) for ex in vague)
    assert all("?" in ex.text or "need" in ex.text for ex in vague)


def test_words_answers_are_the_few_short_ones():
    """Labelling rule 8: every words answer is one of WORDS_ANSWERS (an agent named in the request filled in)."""
    examples = generate_examples({f: 0 for f in FAMILIES} | {"no_call": 400}, seed=5)
    shapes = set(T.WORDS_ANSWERS)
    for ex in examples:
        named = re.fullmatch(r"What should I tell (\S+)\?", ex.text)
        spoken = named and named.group(1).replace("-", " ").lower() in ex.request.replace("-", " ").lower()
        assert ex.text in shapes or spoken, (ex.request, ex.text)
    assert len({ex.text for ex in examples if ex.text in shapes}) >= 10  # every situation, not one answer for all


def test_impossible_counts_fail_clearly(monkeypatch):
    same = Example(request="list the agents", calls=[Call("discover_agents", {})], template="discover_agents.02")
    monkeypatch.setattr(synth, "make_example", lambda family, rng, pool: same)
    with pytest.raises(GenerateError, match="made only 1 distinct discover_agents examples of the 5 .*ask for fewer"):
        generate_examples({f: 0 for f in FAMILIES} | {"discover_agents": 5})


def test_counts_and_split_arithmetic():
    for n in (0, 1, 7, 10, 99):
        assert sum(allocate(n, SPLIT3).values()) == n
    assert allocate(10, SPLIT3) == {"train": 8, "val": 1, "test": 1}
    assert parse_split("0.9,0.1") == {"train": 0.9, "test": 0.1}
    with pytest.raises(GenerateError, match="unknown count"):
        generate_examples({"delete_codebase": 3})


@pytest.mark.parametrize("fmt", ["original", "messages", "gold"])
def test_every_format_reads_back_into_the_same_examples(tmp_path, fmt):
    from tether_tune.data import write_jsonl

    examples = generate_examples({f: 2 for f in FAMILIES}, seed=5)
    path = tmp_path / f"{fmt}.jsonl"
    write_jsonl(path, (synth.to_record(ex, fmt) for ex in examples))
    back = read_examples(path, strict=True)[0]
    assert [(b.request, b.calls, b.template, b.id) for b in back] == [(e.request, e.calls, e.template, e.id) for e in examples]
    assert [b.text for b in back] == [e.text for e in examples]


def test_value_pools_keep_targets_honest():
    # Words that name a status or a playback style never appear in text that does not carry that argument.
    loose = T.CONTEXT + T.MESSAGES_DO + T.MESSAGES_KNOW + [t for pair in T.TASKS for t in pair]
    for text in loose:
        for value in synth.ENUMS["status"] + synth.ENUMS["style"]:
            assert not enum_words(text, value), (text, value)
    for title, description in T.TASKS:
        assert not re.match(r"[A-Z0-9]{2}", title), title  # bare slots lower-case the first letter
        assert not {'"', "'", "`"} & set(title + description)
    assert len({t for t, _ in T.TASKS}) == len(T.TASKS) and all(ROLE.match(a) for a in T.AGENTS)
    # every frame's slots are known and every split can be dealt at least one template per group
    for frame in synth.all_frames():
        assert frame.slot_args <= set(synth.ARG_SLOT), frame.id
    pools = synth.make_pools(SPLIT3, seed=0)
    for name, pool in pools.items():
        assert set(pool.frames) == {"parallel", "no_call", *synth.TOOLS}, name


# --------------------------------------------------------------------------------------------------------------
# The old data's defects: each broken example is caught
# --------------------------------------------------------------------------------------------------------------


def test_caught_an_argument_the_request_never_states(tools):
    ex = Example("create a task to fix the login loop", [Call("create_task", {"title": "fix the login loop", "priority": 7})])
    assert any("priority" in p and "not in the request" in p for p in check_example(ex, tools))
    ex = Example("create a task to fix the login loop",
                 [Call("create_task", {"title": "fix the login loop", "description": "Refactor the session store"})])
    assert any("description" in p for p in check_example(ex, tools))


def test_caught_an_id_not_copied_verbatim(tools):
    changed = TASK[:-1] + "4"
    ex = Example(f"cancel task {TASK}", [Call("cancel_task", {"task_id": changed})])
    assert any("not copied verbatim" in p for p in check_example(ex, tools))
    ex = Example("cancel my task", [Call("cancel_task", {"task_id": "task-123"})])  # a fake id, never said
    assert any("not copied verbatim" in p for p in check_example(ex, tools))


def test_caught_a_malformed_target(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"input": "list the agents", "output": "<start_function_call>call:discover_agents{<end_function_call>"}) + "\n")
    with pytest.raises(DataError, match="malformed call"):
        read_examples(path, strict=True)
    assert run_validate(ValidateConfig(files=[str(path)], tools=TOOLS_FILE)) == 1
    assert "malformed call" in capsys.readouterr().out


def test_caught_unsorted_keys(tmp_path):
    path = tmp_path / "bad.jsonl"
    out = "<start_function_call>call:create_task{title:<escape>x y<escape>,priority:3}<end_function_call>"
    path.write_text(json.dumps({"input": "task x y priority 3", "output": out}) + "\n")
    with pytest.raises(DataError, match="canonical"):
        read_examples(path, strict=True)


def test_caught_a_number_written_as_a_string(tmp_path, tools):
    path = tmp_path / "bad.jsonl"
    out = "<start_function_call>call:create_task{priority:<escape>10<escape>,title:<escape>Fix the build<escape>}<end_function_call>"
    path.write_text(json.dumps({"input": "create a task Fix the build with priority 10", "output": out}) + "\n")
    (ex,), _ = read_examples(path, strict=True)
    assert any("priority" in p and "expected integer" in p for p in check_example(ex, tools))


def test_caught_a_status_outside_the_enum(tools):
    ex = Example("show me the running tasks", [Call("list_tasks", {"status": "running"})])
    assert any("'running' is not one of" in p for p in check_example(ex, tools))


def test_caught_a_status_said_but_dropped():
    assert unstated_enum_words("show me what's done", [Call("list_tasks", {})]) == ["done"]
    assert unstated_enum_words("replay session x as a summary", [Call("playback_session", {"session_id": "x"})])
    assert unstated_enum_words("show me what's done", [Call("list_tasks", {"status": "completed"})]) == []


def test_caught_a_duplicate(tmp_path, capsys):
    a = Example("List all tasks.", [Call("list_tasks", {})])
    b = Example("list  all tasks.", [Call("list_tasks", {})])
    assert dedupe_key(a) == dedupe_key(b)
    assert duplicate_problems([a, b]) and not duplicate_problems([a])
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps(e.to_original()) + "\n" for e in (a, b)))
    assert run_validate(ValidateConfig(files=[str(path)], tools=TOOLS_FILE)) == 1
    assert "duplicate of" in capsys.readouterr().out


def test_caught_a_test_example_whose_template_was_trained_on():
    splits = generate_splits({"get_task": 30, "cancel_task": 30}, 0, SPLIT3)
    assert split_problems(splits) == []
    leaked = Example(f"How is {TASK} doing?", [Call("get_task", {"task_id": TASK})],
                     template=splits["train"][0].template, id="test-leak")
    problems = split_problems({**splits, "test": [*splits["test"], leaked]})
    assert any("test-leak" in p and "also in train" in p for p in problems)
    # the same request in two splits is caught too
    problems = split_problems({**splits, "val": [*splits["val"], splits["train"][1]]})
    assert any("the same request is in train" in p for p in problems)

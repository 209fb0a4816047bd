"""Scoring on hand-made outputs whose scores are known, the predictions file matching, and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tether_tune.cli import main
from tether_tune.data import DataError, parse_record
from tether_tune.evaluate import SavedPrediction, match_predictions
from tether_tune.scoring import NO_CALL, REPORT_KEYS, compare_markdown, markdown_summary, score, values_match

REPO_ROOT = Path(__file__).resolve().parents[1]
U1 = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"
U2 = "a1b2c3d4-e5f6-4718-893a-4b5c6d7e8f90"
S, E, X, R = "<start_function_call>", "<end_function_call>", "<escape>", "<start_function_response>"


def gold(calls: list[dict], query: str = "a request", id: str | None = None):
    """A gold example, through the real reader: calls = [{"name", "arguments": {arg: [acceptable...]}}]."""
    return parse_record({"id": id, "query": query, "calls": calls}, "test:1")


def call(name: str, body: str = "") -> str:
    return f"{S}call:{name}{{{body}}}{E}"


TITLE = {"name": "create_task", "arguments": {"title": ["Fix login bug", "fix the login bug"]}}
TITLE_PRIO = {"name": "create_task", "arguments": {"title": ["Fix login bug"], "priority": [8]}}
GET_U1 = {"name": "get_task", "arguments": {"task_id": [U1]}}
CANCEL_U2 = {"name": "cancel_task", "arguments": {"task_id": [U2]}}
PERFECT = call("create_task", f"priority:8,title:{X}Fix login bug{X}") + R


def one(tools, gold_calls, output):
    return score([gold(gold_calls)], [output], tools)


def headline(report) -> dict:
    return {k: report[k] for k in REPORT_KEYS[:10]}


ALL_ONE = {k: 1.0 for k in REPORT_KEYS[1:10]} | {"n": 1}


# ---------------------------------------------------------------------------------------------------- one example


def test_perfect_prediction(tools):
    report = one(tools, [TITLE_PRIO], PERFECT)
    assert headline(report) == ALL_ONE
    assert report["failures"] == []
    assert report["per_tool"]["create_task"]["exact_call_accuracy"] == 1.0


def test_wrong_tool(tools):
    report = one(tools, [GET_U1], call("cancel_task", f"task_id:{X}{U1}{X}") + R)
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 0.0
    assert (report["argument_precision"], report["argument_recall"], report["argument_f1"]) == (0.0, 0.0, 0.0)
    assert report["parse_rate"] == 1.0 and report["schema_valid_rate"] == 1.0
    conf = report["confusion"]
    row = conf["matrix"][conf["labels"].index("get_task")]
    assert row[conf["labels"].index("cancel_task")] == 1 and sum(row) == 1
    (failure,) = report["failures"]
    assert failure["reason"] == "wrong tool: expected get_task, got cancel_task"
    assert failure["parsed"] == [{"name": "cancel_task", "arguments": {"task_id": U1}}]
    assert failure["expected"] == {"calls": [GET_U1], "text": None}


def test_missing_argument(tools):
    report = one(tools, [TITLE_PRIO], call("create_task", f"title:{X}Fix login bug{X}") + R)
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 1.0
    assert report["argument_precision"] == 1.0 and report["argument_recall"] == 0.5
    assert report["argument_f1"] == pytest.approx(2 / 3)
    assert report["failures"][0]["reason"] == "missing argument create_task.priority"


def test_extra_argument(tools):
    report = one(tools, [TITLE], PERFECT)
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 1.0
    assert report["argument_precision"] == 0.5 and report["argument_recall"] == 1.0
    assert report["failures"][0]["reason"] == "extra argument create_task.priority=8"


def test_acceptable_paraphrase_normalises_equal(tools):
    report = one(tools, [TITLE], call("create_task", f"title:{X}fix-login bug{X}") + R)
    assert headline(report) == ALL_ONE


def test_value_outside_acceptable_list(tools):
    report = one(tools, [TITLE], call("create_task", f"title:{X}fix the logout bug{X}") + R)
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 1.0
    assert report["argument_precision"] == 0.0 and report["argument_recall"] == 0.0
    assert "create_task.title='fix the logout bug' is not acceptable" in report["failures"][0]["reason"]


def test_two_calls_in_the_other_order_are_exact(tools):
    out = call("cancel_task", f"task_id:{X}{U2}{X}") + call("get_task", f"task_id:{X}{U1}{X}") + R
    assert headline(one(tools, [GET_U1, CANCEL_U2], out)) == ALL_ONE
    # Same tool twice: the pairing must go by values, not by names alone.
    get_u2 = {"name": "get_task", "arguments": {"task_id": [U2]}}
    out = call("get_task", f"task_id:{X}{U2}{X}") + call("get_task", f"task_id:{X}{U1}{X}") + R
    assert headline(one(tools, [GET_U1, get_u2], out)) == ALL_ONE


def test_one_call_of_two_missing(tools):
    report = one(tools, [GET_U1, CANCEL_U2], call("get_task", f"task_id:{X}{U1}{X}") + R)
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 0.0
    assert report["argument_precision"] == 1.0 and report["argument_recall"] == 0.5
    assert report["failures"][0]["reason"] == "missing call cancel_task"
    assert set(report["per_tool"]) == {"get_task", "cancel_task", NO_CALL} - {NO_CALL}


def test_no_call_answered_with_a_call(tools):
    report = one(tools, [], call("discover_agents") + R)
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 0.0
    assert report["no_call_precision"] == 0.0 and report["no_call_recall"] == 0.0
    # No argument on either side: nothing claimed, nothing missed.
    assert report["argument_precision"] == 1.0 and report["argument_recall"] == 1.0
    assert report["failures"][0]["reason"] == "called discover_agents where a words answer was expected"
    assert report["per_tool"][NO_CALL]["tool_recall"] == 0.0


def test_call_answered_in_words(tools):
    report = one(tools, [GET_U1], "Which task do you mean?<end_of_turn>")
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 0.0
    assert report["parse_rate"] == 1.0 and report["schema_valid_rate"] == 1.0
    assert report["no_call_precision"] == 0.0 and report["no_call_recall"] == 0.0
    assert report["argument_precision"] == 0.0 and report["argument_recall"] == 0.0
    assert report["failures"][0]["reason"] == "answered in words where a call of get_task was expected"


def test_no_call_answered_in_words_is_exact(tools):
    assert headline(one(tools, [], "I can only manage CodeTether tasks.<end_of_turn>")) == ALL_ONE


def test_unparsable_truncated_output(tools):
    report = one(tools, [TITLE], f"{S}call:create_task{{title:{X}Fix log")
    assert report["parse_rate"] == 0.0 and report["schema_valid_rate"] == 0.0
    assert report["exact_call_accuracy"] == 0.0 and report["tool_selection_accuracy"] == 0.0
    assert report["no_call_precision"] == 1.0  # truncated call is not a words answer: no false positive
    conf = report["confusion"]
    assert conf["labels"][-1] == "(unparsable)"
    assert conf["matrix"][conf["labels"].index("create_task")][-1] == 1
    assert report["failures"][0]["reason"].startswith("unparsable: truncated")


def test_valid_call_followed_by_garbage_is_not_exact(tools):
    report = one(tools, [TITLE], PERFECT.replace(R, "") + f"{S}call:get_task{{")
    assert report["parse_rate"] == 0.0 and report["exact_call_accuracy"] == 0.0


def test_unfinished_output_is_a_parse_failure(tools):
    """A words answer cut at max_new_tokens reads as text, but it is not an answer."""
    report = score([gold([])], ["I can only"], tools, unfinished=[True])
    assert report["parse_rate"] == 0.0 and report["exact_call_accuracy"] == 0.0 and report["no_call_recall"] == 0.0
    assert report["failures"][0]["reason"].startswith("unfinished:") and report["meta"]["unfinished_outputs"] == 1


def test_string_number_is_coerced_then_exact_and_valid(tools):
    """Decision: score what would be dispatched. ``priority:<escape>8<escape>`` is coerced to 8 (as the
    predictor and the server do), so it is schema-valid and exact; the coercion is counted in meta."""
    report = one(tools, [TITLE_PRIO], call("create_task", f"priority:{X}8{X},title:{X}Fix login bug{X}") + R)
    assert headline(report) == ALL_ONE
    assert report["meta"]["coerced_outputs"] == 1
    assert one(tools, [TITLE_PRIO], PERFECT)["meta"]["coerced_outputs"] == 0


def test_schema_invalid_value_is_not_exact(tools):
    """"Working" normalises equal to "working" but is not in the enum: the server would reject it."""
    gold_call = {"name": "list_tasks", "arguments": {"status": ["working"]}}
    report = one(tools, [gold_call], call("list_tasks", f"status:{X}Working{X}") + R)
    assert report["argument_precision"] == 1.0  # the value is acceptable ...
    assert report["schema_valid_rate"] == 0.0 and report["exact_call_accuracy"] == 0.0  # ... the call is not


def test_values_match():
    assert values_match(8, 8.0) and not values_match(True, 1) and not values_match(1, True)
    assert not values_match("8", 8) and values_match(" Code_Reviewer ", "code-reviewer")
    assert values_match([1, "A b"], [1, "ab"]) and not values_match([1], [1, 2])


# ---------------------------------------------------------------------------------------------------- aggregates


def test_micro_averages_per_tool_and_confusion(tools):
    examples = [gold([TITLE_PRIO]), gold([TITLE_PRIO]), gold([], id="nc"), gold([GET_U1])]
    outputs = [PERFECT, call("create_task", f"title:{X}Fix login bug{X}") + R, "Hello!<end_of_turn>", "Which one?"]
    report = score(examples, outputs, tools)
    assert headline(report) == pytest.approx({
        "n": 4,
        "exact_call_accuracy": 0.5,
        "tool_selection_accuracy": 0.75,
        "argument_precision": 1.0,  # 3 predicted arguments, all right
        "argument_recall": 0.6,  # of 5 gold arguments
        "argument_f1": 0.75,
        "parse_rate": 1.0,
        "schema_valid_rate": 1.0,
        "no_call_precision": 0.5,
        "no_call_recall": 1.0,
    })
    assert list(report["per_tool"]) == ["create_task", "get_task", NO_CALL]
    ct = report["per_tool"]["create_task"]
    assert (ct["n"], ct["exact_call_accuracy"], ct["argument_recall"], ct["tool_recall"]) == (2, 0.5, 0.75, 1.0)
    assert report["per_tool"]["get_task"]["tool_recall"] == 0.0
    nc = report["per_tool"][NO_CALL]
    assert (nc["tool_precision"], nc["tool_recall"]) == (report["no_call_precision"], report["no_call_recall"])
    conf = report["confusion"]
    labels = conf["labels"]
    assert labels == ["create_task", "get_task", NO_CALL]
    assert conf["matrix"] == [[2, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert [f["index"] for f in report["failures"]] == [1, 3]


def test_report_keys_and_markdown(tools):
    examples = [gold([TITLE_PRIO], id="a"), gold([GET_U1], id="b")]
    report = score(examples, [PERFECT, "garbage"], tools)
    assert tuple(report)[: len(REPORT_KEYS)] == REPORT_KEYS
    assert set(report) - set(REPORT_KEYS) == {"meta"}
    for key in REPORT_KEYS[1:10]:
        assert 0.0 <= report[key] <= 1.0
    json.dumps(report)  # serialisable as is
    md = markdown_summary(report, "T")
    assert md.startswith("# T\n") and "| exact-call accuracy | 50.0% |" in md and "**b**" in md
    side = compare_markdown({"base": score(examples, ["x", "y"], tools), "fine-tuned": report})
    assert "| metric | base | fine-tuned |" in side and "| exact-call accuracy | 0.0% | 50.0% |" in side


def test_score_rejects_count_mismatch(tools):
    with pytest.raises(ValueError, match="2 examples but 1 outputs"):
        score([gold([]), gold([])], ["a"], tools)


# ---------------------------------------------------------------------------------------------------- predictions files


def test_match_by_id_in_any_order():
    examples = [gold([], "q1", id="1"), gold([], "q2", id="2")]
    preds = [SavedPrediction("out2", id="2", source="p:1"), SavedPrediction("out1", id="1", input="q1", source="p:2")]
    assert match_predictions(examples, preds) == ["out1", "out2"]
    with pytest.raises(DataError, match="1 gold examples have no prediction"):
        match_predictions(examples, preds[:1])


def test_match_by_line_and_input_mismatch():
    examples = [gold([], "q1"), gold([], "q2")]
    preds = [SavedPrediction("o1", input="q1", source="p:1"), SavedPrediction("o2", source="p:2")]
    assert match_predictions(examples, preds) == ["o1", "o2"]
    bad = [SavedPrediction("o1", source="p:1"), SavedPrediction("o2", input="q3", source="p:2")]
    with pytest.raises(DataError, match=r"p:2: field 'input': 'q3' is not the gold request at test:1: 'q2'"):
        match_predictions(examples, bad)
    with pytest.raises(DataError, match="1 predictions for 2 gold examples"):
        match_predictions(examples, preds[:1])


# ---------------------------------------------------------------------------------------------------- CLI


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_cli_predictions_mode_writes_exact_numbers(tmp_path, capsys):
    test_file = _write_jsonl(tmp_path / "gold.jsonl", [
        {"id": "a", "query": "make a task to fix the login bug, priority 8", "calls": [TITLE_PRIO]},
        {"id": "b", "query": f"show task {U1}", "calls": [GET_U1]},
        {"id": "c", "query": "hi there", "calls": []},
        {"id": "d", "query": "which agents are there?", "calls": [{"name": "discover_agents", "arguments": {}}]},
    ])
    preds = _write_jsonl(tmp_path / "pred.jsonl", [
        {"id": "d", "output": call("discover_agents") + R},
        {"id": "c", "output": call("discover_agents") + R},
        {"id": "b", "output": call("get_task", f"task_id:{X}{U1}{X}") + R},
        {"id": "a", "output": PERFECT},
    ])
    out = tmp_path / "r" / "report.json"
    rc = main(["evaluate", "--test_file", str(test_file), "--predictions", str(preds), "--output", str(out),
               "--tools", str(REPO_ROOT / "codetether_tools.json")])
    assert rc == 0
    report = json.loads(out.read_text())
    assert headline(report) == {
        "n": 4, "exact_call_accuracy": 0.75, "tool_selection_accuracy": 0.75,
        "argument_precision": 1.0, "argument_recall": 1.0, "argument_f1": 1.0,
        "parse_rate": 1.0, "schema_valid_rate": 1.0,
        "no_call_precision": 0.0,  # never answered in words while one gold example wanted it: 0/0 -> 0
        "no_call_recall": 0.0,
    }
    assert [f["id"] for f in report["failures"]] == ["c"]
    assert list(report)[: len(REPORT_KEYS)] == list(REPORT_KEYS) and report["meta"]["label"] == "predictions"
    assert (out.parent / "report.md").read_text().startswith("# Evaluation of")
    assert "| exact-call accuracy | 75.0% |" in capsys.readouterr().out


def test_cli_original_format_gold_matched_by_line(tmp_path):
    test_file = _write_jsonl(tmp_path / "test.jsonl", [
        {"input": "priority 8: fix login bug", "output": PERFECT.replace(R, "")},
        {"input": "hello", "output": "Hi! I manage CodeTether tasks."},
    ])
    preds = _write_jsonl(tmp_path / "pred.jsonl", [
        {"input": "priority 8: fix login bug", "output": call("create_task", f"priority:8,title:{X}fix LOGIN bug{X}") + R},
        {"input": "hello", "output": "Hello.<end_of_turn>"},
    ])
    rc = main(["evaluate", "--test_file", str(test_file), "--predictions", str(preds),
               "--tools", str(REPO_ROOT / "codetether_tools.json")])
    assert rc == 0
    report = json.loads((tmp_path / "pred.report.json").read_text())
    assert report["exact_call_accuracy"] == 1.0 and report["n"] == 2


def test_cli_mismatched_input_is_an_error(tmp_path, capsys):
    test_file = _write_jsonl(tmp_path / "test.jsonl", [{"input": "hello", "output": "Hi."}])
    preds = _write_jsonl(tmp_path / "pred.jsonl", [{"input": "goodbye", "output": "Bye."}])
    code = main(["evaluate", "--test_file", str(test_file), "--predictions", str(preds),
                 "--tools", str(REPO_ROOT / "codetether_tools.json")])
    assert code == 2
    assert re.search(r"pred.jsonl:1: field 'input': 'goodbye' is not the gold request at .*test.jsonl:1: 'hello'",
                     capsys.readouterr().err)


def test_cli_needs_one_source(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--test_file", "x.jsonl"])
    assert "exactly one of --predictions" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- model mode


def _tiny_adapter_dir(base: Path, out: Path) -> Path:
    """A training output dir as ``train`` writes it: a random LoRA adapter on the tiny model, run_info, tools."""
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    shutil.copy(REPO_ROOT / "codetether_tools.json", out / "tools.json")
    (out / "run_info.json").write_text(json.dumps({"base_model": str(base)}))
    return out


def test_model_mode_end_to_end(tiny_model_dir, tmp_path):
    """Tiny random model + LoRA adapter, --compare_base, both decodings.
    Outputs are noise, so only the report's shape is checked."""
    decodings = ["constrained", "unconstrained"]
    from tether_tune.evaluate import EvaluateConfig, run_evaluate

    model_dir = _tiny_adapter_dir(tiny_model_dir, tmp_path / "run")
    test_file = _write_jsonl(tmp_path / "gold.jsonl", [
        {"id": "a", "query": "make a task to fix the login bug", "calls": [TITLE]},
        {"id": "b", "query": "hi", "calls": []},
        {"id": "c", "query": f"show task {U1}", "calls": [GET_U1]},
    ])
    # As finetune.py --evaluate calls it, plus the flags a test needs to be quick.
    cfg = EvaluateConfig(model_path=str(model_dir), test_file=str(test_file), compare_base=True,
                         decoding=",".join(decodings), max_new_tokens=6, batch_size=2, device="cpu")
    assert run_evaluate(cfg) == 0
    report = json.loads((model_dir / "eval_report.json").read_text())
    assert report["n"] == 3 and list(report)[: len(REPORT_KEYS)] == list(REPORT_KEYS)
    assert {"p50_s", "p95_s", "tokens_per_s"} <= set(report["latency"])
    assert report["meta"]["label"] == f"fine-tuned ({decodings[0]})"
    labels = [f"{who} ({d})" for who in ("fine-tuned", "base") for d in decodings]
    assert list(report["compare"]) == labels[1:]
    assert all(r["n"] == 3 and "latency" in r for r in report["compare"].values())
    md = (model_dir / "eval_report.md").read_text()
    assert "| metric | " + " | ".join(labels) + " |" in md


def test_multi_call_and_per_tag_metrics(tools):
    """Multi-call exact counts only the examples with two or more gold calls; per_tag groups by gold tags."""
    examples = [
        parse_record({"id": "m1", "query": "q1", "calls": [GET_U1, CANCEL_U2], "tags": ["typed", "multi"]}, "t:1"),
        parse_record({"id": "m2", "query": "q2", "calls": [GET_U1, CANCEL_U2], "tags": ["spoken", "multi"]}, "t:2"),
        parse_record({"id": "s1", "query": "q3", "calls": [GET_U1], "tags": ["spoken", "single"]}, "t:3"),
        parse_record({"id": "n1", "query": "q4", "calls": [], "tags": ["spoken", "no-call"]}, "t:4"),
    ]
    both = call("get_task", f"task_id:{X}{U1}{X}") + call("cancel_task", f"task_id:{X}{U2}{X}") + R
    outputs = [both, call("get_task", f"task_id:{X}{U1}{X}") + R, call("get_task", f"task_id:{X}{U1}{X}") + R,
               "Hello!<end_of_turn>"]
    report = score(examples, outputs, tools)
    assert report["multi_call_n"] == 2 and report["multi_call_exact_accuracy"] == 0.5
    assert report["exact_call_accuracy"] == 0.75
    assert list(report["per_tag"]) == ["typed", "multi", "spoken", "single", "no-call"]
    assert report["per_tag"]["spoken"]["n"] == 3 and report["per_tag"]["spoken"]["exact_call_accuracy"] == 2 / 3
    assert report["per_tag"]["multi"]["exact_call_accuracy"] == 0.5
    assert report["per_tag"]["no-call"]["no_call_recall"] == 1.0
    md = markdown_summary(report, "T")
    assert "## Per tag" in md and "| spoken | 3 | 66.7% |" in md
    assert "| multi-call exact | 50.0% |" in md


def test_bad_tags_name_the_line():
    with pytest.raises(DataError, match="t:9: field 'tags'"):
        parse_record({"query": "q", "calls": [], "tags": "spoken"}, "t:9")

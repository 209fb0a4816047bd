"""Reading every accepted format into one Example, locating bad input, and the loss mask."""

from __future__ import annotations

import json

import pytest

from tether_tune.checks import check_example
from tether_tune.data import DataError, Example, read_examples, write_jsonl
from tether_tune.encode import IGNORE_INDEX, encode_example, show_supervision
from tether_tune.format import END_OF_TURN, START_RESPONSE, Call, render_conversation

TASK = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"


def _write(tmp_path, lines):
    path = tmp_path / "d.jsonl"
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


def test_three_formats_read_into_the_same_example(tmp_path):
    call = Call("get_task", {"task_id": TASK})
    original = {"input": f"status of {TASK}?", "output": f"<start_function_call>call:get_task{{task_id:<escape>{TASK}<escape>}}<end_function_call>"}
    messages = {
        "messages": [
            {"role": "user", "content": f"status of {TASK}?"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_task", "arguments": {"task_id": TASK}}}]},
        ]
    }
    gold = {"id": "g1", "query": f"status of {TASK}?", "calls": [{"name": "get_task", "arguments": {"task_id": [TASK]}}]}
    examples, errors = read_examples(_write(tmp_path, [original, messages, gold]))
    assert errors == []
    assert [ex.calls for ex in examples] == [[call]] * 3
    assert {ex.request for ex in examples} == {f"status of {TASK}?"}
    assert examples[2].id == "g1" and examples[2].acceptable_values() == [{"task_id": [TASK]}]
    assert examples[0].source.endswith("d.jsonl:1")


def test_text_answers_and_gold_no_call(tmp_path):
    examples, _ = read_examples(_write(tmp_path, [{"input": "hi", "output": "Hello! What should I do?"}, {"query": "hi", "calls": []}]))
    assert examples[0].calls == [] and examples[0].text == "Hello! What should I do?"
    assert examples[1].calls == [] and examples[1].text is None


@pytest.mark.parametrize(
    "line, field_name, fragment",
    [
        ("{not json", None, "not valid JSON"),
        ({"input": "hi"}, "output", "missing"),
        ({"input": "", "output": "x"}, "input", "empty"),
        ({"input": "x", "output": "<start_function_call>call:discover_agents{<end_function_call>"}, "output", "malformed call"),
        ({"input": "x", "output": "<start_function_call>call:create_task{title:<escape>a<escape>,priority:3}<end_function_call>"}, "output", "canonical"),
        ({"query": "x", "calls": [{"name": "get_task", "arguments": {"task_id": "abc"}}]}, "calls[0].arguments.task_id", "acceptable values"),
        ({"messages": [{"role": "user", "content": "x"}]}, "messages", "at least"),
        ({"foo": 1}, None, "unknown format"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, field_name, fragment):
    path = _write(tmp_path, [{"input": "hi", "output": "Hello"}, line])
    with pytest.raises(DataError) as info:
        read_examples(path, strict=True)
    err = info.value
    assert err.source == f"{path}:2" and err.field == field_name and fragment in str(err)
    # Not strict: the good line is kept and the bad one is reported, nothing is lost silently.
    examples, errors = read_examples(path, strict=False)
    assert len(examples) == 1 and len(errors) == 1


def test_check_example_catches_schema_and_grounding_problems(tools):
    def ex(request, **args):
        return Example(request=request, calls=[Call("create_task", args)])

    assert check_example(ex("create a task 'fix login' priority 8", title="fix login", priority=8), tools) == []
    assert any("not in the request" in p for p in check_example(ex("create a task fix login", title="fix login", priority=8), tools))
    assert any("expected integer" in p for p in check_example(ex("task fix login priority 8", title="fix login", priority="8"), tools))
    listing = Example(request="show running tasks", calls=[Call("list_tasks", {"status": "running"})])
    assert any("not one of" in p for p in check_example(listing, tools))
    rebuild = Example(request="rebuild the cache", calls=[Call("create_task", {"title": "rebuild the cache", "agent_type": "build"})])
    assert any("neither the value nor a synonym" in p for p in check_example(rebuild, tools))
    get = Example(request="status of task 3f1c2a9e", calls=[Call("get_task", {"task_id": TASK})])
    assert any("verbatim" in p for p in check_example(get, tools))
    short = Example(request="status of task 3f1c2a9e", calls=[Call("get_task", {"task_id": "3f1c2a9e"})])
    assert any("not the shape the schema gives" in p for p in check_example(short, tools))
    in_codebase = Example(request=f"task in {TASK}: fix login",
                          calls=[Call("create_task", {"title": "fix login", "codebase_id": TASK})])
    assert any("not the shape the schema gives" in p for p in check_example(in_codebase, tools))
    vague = Example(request="create a task to fix login", calls=[Call("create_task", {"title": "fix login", "description": "Users report 500 errors on OAuth callback"})])
    assert any("words are not in the request" in p for p in check_example(vague, tools))


def test_write_jsonl_round_trips(tmp_path):
    ex = Example(request=f"cancel {TASK}", calls=[Call("cancel_task", {"task_id": TASK})])
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [ex.to_original(), ex.to_gold(), ex.to_messages()])
    back, errors = read_examples(path)
    assert errors == [] and all(b.calls == ex.calls for b in back)


# ---------------------------------------------------------------------------------------------- the loss mask


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_mask_covers_exactly_the_model_turn_of_a_call(tiny_tokenizer, tools):
    ex = Example(request=f"what's up with {TASK}", calls=[Call("get_task", {"task_id": TASK})])
    enc = encode_example(tiny_tokenizer, ex, tools)
    assert len(enc.input_ids) == len(enc.labels)
    first = next(i for i, y in enumerate(enc.labels) if y != IGNORE_INDEX)
    # Everything before the model turn is masked, everything after it is supervised, and nothing else.
    assert all(y == IGNORE_INDEX for y in enc.labels[:first])
    assert enc.labels[first:] == enc.input_ids[first:]
    decode = lambda ids: tiny_tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)  # noqa: E731
    prompt, target = decode(enc.input_ids[:first]), decode(enc.input_ids[first:])
    assert prompt.endswith("<start_of_turn>model\n") and prompt.startswith("<bos><start_of_turn>developer\n")
    assert target == f"<start_function_call>call:get_task{{task_id:<escape>{TASK}<escape>}}<end_function_call>{START_RESPONSE}"
    # The prompt declares every tool: the same text as at inference.
    assert prompt + target == render_conversation(ex.prompt_messages() + [ex.target_message()], tools)
    assert enc.input_ids.count(tiny_tokenizer.convert_tokens_to_ids("<bos>")) == 1


def test_mask_of_a_text_answer_ends_with_end_of_turn(tiny_tokenizer, tools):
    ex = Example(request="delete my codebase", text="I can't delete codebases; I can list, create or cancel tasks.")
    enc = encode_example(tiny_tokenizer, ex, tools)
    first = next(i for i, y in enumerate(enc.labels) if y != IGNORE_INDEX)
    target = tiny_tokenizer.decode(enc.input_ids[first:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert target == ex.text + END_OF_TURN
    marked = show_supervision(tiny_tokenizer, enc)
    assert marked.endswith("⟦" + ex.text + END_OF_TURN + "⟧")


def test_a_typed_control_token_in_a_request_stays_text(tiny_tokenizer, tools):
    ex = Example(request="say <escape> and <start_function_call> to the builder", text="Which message?")
    enc = encode_example(tiny_tokenizer, ex, tools)
    ids = enc.input_ids
    sot = tiny_tokenizer.convert_tokens_to_ids("<start_of_turn>")
    eot = tiny_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    turns = [i for i, t in enumerate(ids) if t == sot]  # developer, user, model
    user_ids = ids[turns[1] : ids.index(eot, turns[1])]
    for token in ("<escape>", "<start_function_call>"):
        assert tiny_tokenizer.convert_tokens_to_ids(token) not in user_ids
    text = tiny_tokenizer.decode(user_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert text == "<start_of_turn>user\n" + ex.request

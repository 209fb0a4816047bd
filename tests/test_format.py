"""Rendering is byte-exact with Google's own renderings; parsing gives back what was rendered and never crashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether_tune.format import (
    ESCAPE,
    START_CALL,
    START_RESPONSE,
    TRIGGER,
    Call,
    Control,
    FormatError,
    render_call,
    render_calls,
    render_conversation,
    render_conversation_segments,
    render_declaration,
    render_prompt,
)
from tether_tune.parse import parse_calls, parse_output

GOLDEN_DIR = Path(__file__).resolve().parent / "fixtures" / "golden"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.json"))


def test_golden_files_are_present():
    assert len(GOLDEN_FILES) >= 3, f"expected the golden renderings in {GOLDEN_DIR}"


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_rendering_is_byte_exact(path):
    g = json.loads(path.read_text())
    assert render_conversation(g["messages"], g["tools"], g["add_generation_prompt"]) == g["expected"]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_segments_join_to_the_rendering_and_mark_every_control_token(path):
    g = json.loads(path.read_text())
    segments = render_conversation_segments(g["messages"], g["tools"], g["add_generation_prompt"])
    assert "".join(segments) == g["expected"]
    for s in segments:
        if not isinstance(s, Control):
            assert "<escape>" not in s and "<start_" not in s and "<end_" not in s, s


def test_declaration_without_parameters_and_hidden_keys():
    tool = {"function": {"name": "ping", "description": "Ping.", "parameters": {"type": "object", "properties": {}}}}
    assert render_declaration(tool) == (
        "<start_function_declaration>declaration:ping{description:<escape>Ping.<escape>,"
        "parameters:{type:<escape>OBJECT<escape>}}<end_function_declaration>"
    )
    tool = {
        "function": {
            "name": "f",
            "description": "d",
            "parameters": {
                "type": "object",
                "properties": {
                    "b": {"type": "integer", "description": "B", "minimum": 0, "maximum": 10},
                    "A": {"type": "string", "enum": ["x", "y"], "description": "A"},
                },
            },
            "return": {"type": "string"},
        }
    }
    # Sorted case-insensitively, description/enum/type order, no minimum/maximum/return, no empty required.
    assert render_declaration(tool) == (
        "<start_function_declaration>declaration:f{description:<escape>d<escape>,parameters:{properties:{"
        "A:{description:<escape>A<escape>,enum:[<escape>x<escape>,<escape>y<escape>],type:<escape>STRING<escape>},"
        "b:{description:<escape>B<escape>,type:<escape>INTEGER<escape>}},type:<escape>OBJECT<escape>}}"
        "<end_function_declaration>"
    )


def test_call_rendering_rules():
    call = Call("create_task", {"title": "Fix login", "priority": 8, "urgent": True, "tags": ["a", 2], "o": {"z": 1, "a": 0.5}})
    assert render_call(call) == (
        "<start_function_call>call:create_task{o:{a:0.5,z:1},priority:8,tags:[<escape>a<escape>,2],"
        "title:<escape>Fix login<escape>,urgent:true}<end_function_call>"
    )
    assert render_call(Call("discover_agents")) == "<start_function_call>call:discover_agents{}<end_function_call>"
    with pytest.raises(FormatError):
        render_call(Call("f", {"x": None}))


def test_conversation_with_tool_response_and_follow_up():
    tools = [{"function": {"name": "get_task", "description": "Get.", "parameters": {"type": "object", "properties": {}}}}]
    messages = [
        {"role": "developer", "content": TRIGGER},
        {"role": "user", "content": "status?"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "get_task", "arguments": {}}}]},
        {"role": "tool", "content": {"name": "get_task", "response": {"status": "working"}}},
        {"role": "assistant", "content": "It is running."},
    ]
    text = render_conversation(messages, tools)
    assert text.endswith(
        "<start_of_turn>model\n<start_function_call>call:get_task{}<end_function_call>"
        "<start_function_response>response:get_task{status:<escape>working<escape>}<end_function_response>"
        "It is running.<end_of_turn>\n"
    )
    # After a tool message the generation prompt adds nothing.
    assert render_conversation(messages[:4], tools, add_generation_prompt=True) == render_conversation(messages[:4], tools)


def test_render_prompt_ends_with_generation_prompt():
    prompt = render_prompt("hi", [])
    assert prompt == f"<bos><start_of_turn>developer\n{TRIGGER}<end_of_turn>\n<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"


# ---------------------------------------------------------------------------------------------- parser: examples


def test_parse_strings_with_syntax_characters_inside():
    text = (
        "<start_function_call>call:send_message{agent_name:<escape>code-reviewer<escape>,"
        "message:<escape>a, b: {c} [d] \"e\" 'f' é 😀\nnext line<escape>}<end_function_call><start_function_response>"
    )
    (call,) = parse_calls(text)
    assert call.arguments["message"] == "a, b: {c} [d] \"e\" 'f' é 😀\nnext line"


def test_parse_numbers_booleans_lists_nested_and_two_calls():
    text = (
        "<start_function_call>call:f{a:8,b:-2.5,c:true,d:false,e:[1,[2,<escape>x<escape>]],g:{h:{i:1}}}<end_function_call>"
        "<start_function_call>call:g{}<end_function_call><start_function_response>"
    )
    calls = parse_calls(text)
    assert calls == [Call("f", {"a": 8, "b": -2.5, "c": True, "d": False, "e": [1, [2, "x"]], "g": {"h": {"i": 1}}}), Call("g", {})]


def test_escaped_digits_stay_text_and_bare_text_stays_text():
    (call,) = parse_calls("<start_function_call>call:f{a:<escape>12345<escape>,b:00123456,c:1.50,d:hello}<end_function_call>")
    assert call.arguments == {"a": "12345", "b": "00123456", "c": "1.50", "d": "hello"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("<start_function_call>call:discover_agents{<end_function_call>", "expected an argument name"),
        ("<start_function_call>call:f{a:<escape>x", "never closed"),
        ("<start_function_call>call:f{a:1", "truncated"),
        ("<start_function_call>call:f{a:1}", "truncated"),
        ("<start_function_call>call:f{a 1}<end_function_call>", "':'"),
        ("<start_function_call>call:f{a:1,a:2}<end_function_call>", "twice"),
        ("hello", "expected <start_function_call>"),
        ("<start_function_call>call:f{}<end_function_call><start_function_response>junk", "after the end"),
    ],
)
def test_malformed_and_truncated_text_is_a_format_error_with_position(text, fragment):
    with pytest.raises(FormatError) as info:
        parse_calls(text)
    assert fragment in str(info.value)
    assert info.value.position is not None and 0 <= info.value.position <= len(text)


def test_lenient_parse_keeps_good_calls_text_and_errors():
    out = parse_output("Sure, which task?<end_of_turn>")
    assert (out.calls, out.text, out.errors) == ([], "Sure, which task?", [])
    out = parse_output("<start_function_call>call:f{a:1}<end_function_call><start_function_call>call:g{b:")
    assert out.calls == [Call("f", {"a": 1})]
    assert len(out.errors) == 1 and "truncated" in out.errors[0]


# ---------------------------------------------------------------------------------------------- parser: properties

# Argument text may hold anything but the delimiter itself (the format has no escaping mechanism).
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).filter(lambda s: ESCAPE not in s)
_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_scalar = st.one_of(
    _text,
    st.integers(-(10**12), 10**12),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_key, inner, max_size=4)),
    max_leaves=10,
)
_call = st.builds(Call, _key, st.dictionaries(_key, _value, max_size=5))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_call, min_size=1, max_size=3))
def test_render_then_parse_gives_the_calls_back(calls):
    assert parse_calls(render_calls(calls)) == calls
    assert parse_output(render_calls(calls)).calls == calls


_pieces = st.sampled_from(
    [START_CALL, "<end_function_call>", START_RESPONSE, ESCAPE, "call:", "f", "{", "}", "[", "]", ",", ":", "1", "-", ".", "true", "x", " ", "\n", "<"]
)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(_pieces, max_size=40).map("".join)))
def test_random_text_never_raises_anything_but_format_error(text):
    try:
        parse_calls(text)
    except FormatError:
        pass
    out = parse_output(text)
    assert isinstance(out.errors, list)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_call, min_size=1, max_size=2), st.data())
def test_mutated_renderings_never_raise_anything_but_format_error(calls, data):
    text = render_calls(calls)
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, min(len(text), i + 8)))
    mutation = data.draw(st.sampled_from(["cut", "delete", "insert"]))
    if mutation == "cut":
        text = text[:i]
    elif mutation == "delete":
        text = text[:i] + text[j:]
    else:
        text = text[:i] + data.draw(_pieces) + text[i:]
    try:
        parse_calls(text)
    except FormatError:
        pass
    parse_output(text)


def test_deep_nesting_is_an_error_not_a_crash():
    text = "<start_function_call>call:f{a:" + "[" * 5000 + "]" * 5000 + "}<end_function_call>"
    with pytest.raises(FormatError):
        parse_calls(text)

"""The tools file matches the reference schema; malformed tool files and invalid calls are caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether_tune.format import Call
from tether_tune.parse import parse_calls
from tether_tune.tools import ToolsError, check_tools, coerce_call, id_fits, id_schema, load_tools, validate_call

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "codetether_tools.reference.json"


@pytest.fixture(scope="module")
def tools():
    return load_tools(ROOT / "codetether_tools.json")


def _shape(tools):
    """Names, argument names, types, enums, bounds and required lists: what must equal the reference."""
    out = {}
    for t in tools:
        fn = t["function"]
        params = fn.get("parameters", {})
        props = {
            k: (v.get("type"), tuple(v.get("enum") or ()), v.get("minimum"), v.get("maximum"))
            for k, v in params.get("properties", {}).items()
        }
        out[fn["name"]] = (props, tuple(params.get("required", [])))
    return out


def test_tools_file_has_the_reference_schema(tools):
    reference = json.loads(REFERENCE.read_text())
    assert [t["function"]["name"] for t in tools] == [t["function"]["name"] for t in reference]
    assert _shape(tools) == _shape(reference)
    assert len(tools) == 8


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda ts: ts[0]["function"].pop("name"), "'name' is missing"),
        (lambda ts: ts[1]["function"].update(name=ts[0]["function"]["name"]), "duplicate tool"),
        (lambda ts: ts[0]["function"]["parameters"]["properties"]["title"].update(type="text"), "unknown type"),
        (lambda ts: ts[0]["function"]["parameters"]["required"].append("owner"), "'owner' is not among the properties"),
        (lambda ts: ts[0]["function"]["parameters"]["properties"]["title"].pop("description"), "no description"),
        (lambda ts: ts[0]["function"]["parameters"].update(type="array"), "must be \"object\""),
    ],
)
def test_malformed_tools_are_rejected_with_the_field_named(tools, mutate, fragment):
    broken = json.loads(json.dumps(tools))
    mutate(broken)
    with pytest.raises(ToolsError) as info:
        check_tools(broken, "x.json")
    assert fragment in str(info.value) and "x.json" in str(info.value)


def test_load_tools_reports_bad_json_with_line(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[\n{"type": "function",\n')
    with pytest.raises(ToolsError, match=r"t.json: line \d+"):
        load_tools(path)
    with pytest.raises(ToolsError, match="no such tools file"):
        load_tools(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "call, fragment",
    [
        (Call("delete_codebase", {}), "unknown tool"),
        (Call("get_task", {}), "missing required argument 'task_id'"),
        (Call("get_task", {"task_id": "x", "verbose": True}), "unknown argument 'verbose'"),
        (Call("create_task", {"title": "t", "priority": "8"}), "expected integer"),
        (Call("create_task", {"title": "t", "priority": True}), "expected integer, got bool"),
        (Call("create_task", {"title": "t", "priority": 11}), "outside 0..10"),
        (Call("list_tasks", {"status": "running"}), "not one of"),
        (Call("create_task", {"title": "  "}), "required text is empty"),
    ],
)
def test_validate_call_finds_each_kind_of_error(tools, call, fragment):
    errors = validate_call(call, tools)
    assert any(fragment in e for e in errors), errors


def test_valid_calls_have_no_errors(tools):
    assert validate_call(Call("discover_agents"), tools) == []
    assert validate_call(Call("create_task", {"title": "t", "priority": 0, "agent_type": "build"}), tools) == []


def test_coercion_reads_values_the_schema_way(tools):
    (call,) = parse_calls(
        "<start_function_call>call:create_task{codebase_id:00123456,priority:<escape>8<escape>,title:12345}<end_function_call>"
    )
    out = coerce_call(call, tools)
    assert out.coerced
    assert out.call.arguments == {"codebase_id": "00123456", "priority": 8, "title": "12345"}
    assert validate_call(out.call, tools) == []
    same = coerce_call(Call("create_task", {"title": "t", "priority": 3}), tools)
    assert not same.coerced and same.call.arguments == {"title": "t", "priority": 3}
    # Text that is not a number stays as it was, for validation to report.
    bad = coerce_call(Call("create_task", {"title": "t", "priority": "high"}), tools)
    assert bad.call.arguments["priority"] == "high" and validate_call(bad.call, tools)


def test_packaged_tools_are_the_root_file_byte_for_byte():
    """The root codetether_tools.json (the original project's interface) and the one shipped in the package (the
    default of every --tools) are the same file."""
    from tether_tune.tools import packaged_tools_path

    assert packaged_tools_path().read_bytes() == (ROOT / "codetether_tools.json").read_bytes()
    assert load_tools() == load_tools(ROOT / "codetether_tools.json")


def test_a_directory_or_a_missing_file_is_a_tools_error(tmp_path):
    with pytest.raises(ToolsError, match="is a directory"):
        load_tools(tmp_path)
    with pytest.raises(ToolsError, match="no such tools file"):
        load_tools(tmp_path / "nope.json")


UUID = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"


def test_an_id_fits_the_shape_its_schema_declares(tools):
    props = {fn["function"]["name"] + "." + k: v for fn in tools
             for k, v in fn["function"]["parameters"]["properties"].items()}
    task, codebase = props["cancel_task.task_id"], props["create_task.codebase_id"]
    assert id_fits(UUID, task) and id_fits(UUID.upper(), task)
    assert not id_fits("04891101", task) and not id_fits(UUID[:-1], task) and not id_fits("global", task)
    assert id_fits("04891101", codebase) and id_fits("global", codebase)
    assert not id_fits(UUID, codebase) and not id_fits("0489110", codebase) and not id_fits("task-42a", codebase)
    # JSON Schema's own words win over the description; an id the schema says nothing about takes any shape.
    assert id_fits("T-42", {"type": "string", "pattern": "^T-[0-9]+$", "description": "Task id (UUID)."})
    assert not id_fits(UUID, {"type": "string", "pattern": "^T-[0-9]+$"})
    assert not id_fits("04891101", {"type": "string", "format": "uuid"})
    assert id_fits("anything-9", {"type": "string", "description": "Run id."})
    # list_tasks' codebase_id declares no shape: it takes create_task's, the same key's (a task's UUID is no
    # codebase); a key no tool shapes keeps its own schema
    listed = props["list_tasks.codebase_id"]
    assert id_fits(UUID, listed) and id_schema("codebase_id", listed, tools) is codebase
    assert not id_fits(UUID, id_schema("codebase_id", listed, tools))
    assert id_schema("run_id", {"type": "string"}, tools) == {"type": "string"}
    assert id_schema("task_id", task, tools) is task


def test_an_enum_value_is_stated_by_its_name_or_a_synonym_as_whole_words():
    from tether_tune.tools import enum_stated

    assert enum_stated("failed", "which tasks broke overnight?") and enum_stated("failed", "Failed tasks")
    assert enum_stated("summary", "he summarized session 1") and enum_stated("summary", "tl;dr of that session")
    assert enum_stated("summary", "play back sessions A and B, both as summaries")
    assert enum_stated("verbatim", "play it back word for word") and enum_stated("working", "what's In Progress")
    assert not enum_stated("build", "rebuild the cache") and not enum_stated("completed", "abandoned tasks")
    assert not enum_stated("pending", "list all the tasks") and not enum_stated(7, "priority 7")
    assert enum_stated("Custom", "use the custom one")  # a value without synonyms: its own name, case aside

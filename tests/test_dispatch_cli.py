"""``tether-tune run`` without a server: the dry run prints the JSON-RPC and sends nothing (its --server is a
loopback port where nothing listens, so any attempt to send would fail), bad flags name the flag, a server that
is down is an error with exit status 2, and the command runs end to end on the tiny model."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tether_tune import cli
from tether_tune.dispatch import read_calls
from tether_tune.errors import DataError

TASK = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"
CALLS = [
    {"name": "create_task", "arguments": {"title": "fix the login bug", "priority": 8}},
    {"name": "playback_session", "arguments": {"session_id": TASK, "style": "summary"}},
]


@pytest.fixture
def down() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def calls_file(tmp_path: Path) -> Path:
    path = tmp_path / "prediction.json"
    path.write_text(json.dumps({"calls": CALLS, "text": ""}))  # what `tether-tune predict` prints
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["run", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_dry_run_prints_the_json_rpc_and_sends_nothing(capsys, calls_file: Path, down: str) -> None:
    code, out, _ = run(capsys, "--calls", str(calls_file), "--server", down)
    assert code == 0
    assert out.splitlines() == [
        "calls (2):",
        "  1. create_task(priority=8, title='fix the login bug')",
        f"  2. playback_session(session_id='{TASK}', style='summary')  [get_messages on the server, read back by the "
        "client]",
        f"dry run: nothing sent. With --execute, each call is a POST to {down}/mcp/v1/rpc (after one tools/list):",
        '  {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "create_task", "arguments": '
        '{"title": "fix the login bug", "priority": 8}}}',
        '  {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_messages", "arguments": '
        f'{{"conversation_id": "{TASK}", "limit": 1000}}}}}}',
        "add --execute to carry them out",
    ]


def test_dry_run_json(capsys, calls_file: Path, down: str) -> None:
    code, out, _ = run(capsys, "--calls", str(calls_file), "--server", down, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [d["dry_run"] for d in lines] == [True, True]
    assert [d["call"] for d in lines] == CALLS
    assert lines[1]["jsonrpc"]["params"] == {"name": "get_messages", "arguments": {"conversation_id": TASK,
                                                                                    "limit": 1000}}


def test_execute_against_a_server_that_is_down(capsys, calls_file: Path, down: str) -> None:
    code, _, err = run(capsys, "--calls", str(calls_file), "--server", down, "--execute")
    assert code == 2
    assert f"tether-tune run: error: cannot reach a CodeTether server at {down}/mcp/v1/rpc" in err


@pytest.mark.parametrize("argv, match", [
    ((), "REQUEST: give a request in words, or --calls FILE"),
    (("hi", "--calls", "x.json"), "REQUEST and --calls: give one of them"),
    (("--calls", "no-such.json"), "--calls no-such.json: no such file"),
    (("hi", "--model_path", "./no-such-model"), "--model_path ./no-such-model: no such directory"),
    (("hi", "--server", "ftp://x", "--model_path", "."), "--server 'ftp://x': expected an http(s) URL"),
    (("hi", "--timeout", "0", "--model_path", "."), "--timeout 0.0: must be more than 0 seconds"),
])
def test_bad_flags_name_the_flag(capsys, argv: tuple[str, ...], match: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and match in err, err


def test_bad_calls_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "calls.json"
    path.write_text(json.dumps([{"name": "get_task", "arguments": {"task_id": TASK}}, {"arguments": {}}]))
    with pytest.raises(DataError, match=r"calls.json: field 'calls\[1\]': expected \{\"name\""):
        read_calls(path)
    path.write_text(json.dumps([{"name": "create_task", "arguments": {"priority": "high"}}]))
    code, _, err = run(capsys, "--calls", str(path))
    assert code == 2 and "call 1 (create_task) is not valid against the tools: create_task: missing required" in err


def test_end_to_end_on_the_tiny_model(capsys, tiny_model_dir: Path, down: str) -> None:
    """The tiny model's calls are random: this checks that words go in and a dry run (or a words answer) comes
    out through the real loading and prediction path."""
    code, out, err = run(capsys, f"cancel task {TASK}", "--model_path", str(tiny_model_dir), "--server", down,
                         "--max_new_tokens", "48", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and (all(d.get("dry_run") for d in lines) or lines == [{"calls": [], "text": lines[0]["text"]}])

"""``tether-tune run`` against the real CodeTether server: calls carried out and printed (readable and --json),
a dry run that sends nothing, cancel_task that asks unless --yes, failures with their message and exit status,
and the chain from words on the tiny model."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from tether_tune import cli
from tether_tune.dispatch import CodeTetherClient, carry_out
from tether_tune.format import Call

pytestmark = pytest.mark.integration
UNKNOWN = "3f1c2a9e-7b4d-4c1e-9a0f-2d8e6b5c4a13"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["run", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def calls_file(tmp_path: Path, *calls: Call) -> str:
    path = tmp_path / "calls.json"
    path.write_text(json.dumps([c.to_dict() for c in calls]))
    return str(path)


def new_task(server, title: str = "a task to cancel") -> str:
    with CodeTetherClient(server.url) as c:
        return carry_out(Call("create_task", {"title": title}), c).result["task_id"]


def task_status(server, task_id: str) -> str:
    with CodeTetherClient(server.url) as c:
        return carry_out(Call("get_task", {"task_id": task_id}), c).result["status"]


def test_execute_prints_results(capsys, tmp_path: Path, codetether_server) -> None:
    path = calls_file(tmp_path, Call("create_task", {"title": "fix the login bug", "priority": 8}),
                      Call("discover_agents", {}))
    code, out, err = run(capsys, "--calls", path, "--server", codetether_server.url, "--execute")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == ["calls (2):", "  1. create_task(priority=8, title='fix the login bug')",
                         "  2. discover_agents()"]
    assert lines[3].startswith("1. create_task (") and lines[3].endswith(" ms)")
    assert lines[4].startswith("   created task ") and lines[4].endswith(
        ": 'fix the login bug' (pending, codebase global)")
    assert lines[5].startswith("2. discover_agents (") and lines[6].startswith("   1 agent")
    assert "the server's tools differ from ours" in err and "'forage'" in err  # the drift report


def test_execute_json(capsys, tmp_path: Path, codetether_server) -> None:
    path = calls_file(tmp_path, Call("create_task", {"title": "json please"}), Call("list_tasks", {}))
    code, out, _ = run(capsys, "--calls", path, "--server", codetether_server.url, "--execute", "--json")
    created, listed = (json.loads(line) for line in out.splitlines())
    assert code == 0 and created["server_call"]["name"] == "create_task"
    assert created["result"]["task_id"] in [t["task_id"] for t in listed["result"]["tasks"]]
    assert listed["latency_s"] > 0


def test_dry_run_sends_nothing(capsys, tmp_path: Path, codetether_server) -> None:
    path = calls_file(tmp_path, Call("create_task", {"title": "only a dry run"}))
    posts = codetether_server.rpc_posts()
    code, out, _ = run(capsys, "--calls", path, "--server", codetether_server.url)
    assert code == 0 and "dry run: nothing sent" in out and '"name": "create_task"' in out
    assert codetether_server.rpc_posts() == posts


@pytest.mark.parametrize("answer, code, status", [("n\n", 1, "pending"), ("", 1, "pending"), ("y\n", 0, "cancelled")])
def test_cancel_asks_without_yes(capsys, monkeypatch, tmp_path: Path, codetether_server, answer: str, code: int,
                                 status: str) -> None:
    task_id = new_task(codetether_server)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    got, out, err = run(capsys, "--calls", calls_file(tmp_path, Call("cancel_task", {"task_id": task_id})),
                        "--server", codetether_server.url, "--execute")
    assert f"carry out cancel_task(task_id='{task_id}')? This cannot be undone. [y/N]" in err
    assert got == code and task_status(codetether_server, task_id) == status
    if status == "pending":
        assert "skipped: not confirmed (nothing sent)" in out


def test_cancel_with_yes_does_not_ask(capsys, tmp_path: Path, codetether_server) -> None:
    task_id = new_task(codetether_server)
    code, out, err = run(capsys, "--calls", calls_file(tmp_path, Call("cancel_task", {"task_id": task_id})),
                         "--server", codetether_server.url, "--execute", "--yes")
    assert code == 0 and "[y/N]" not in err and f"task {task_id}: cancelled" in out
    assert task_status(codetether_server, task_id) == "cancelled"


def test_unknown_task_exits_2(capsys, tmp_path: Path, codetether_server) -> None:
    code, _, err = run(capsys, "--calls", calls_file(tmp_path, Call("get_task", {"task_id": UNKNOWN})),
                       "--server", codetether_server.url, "--execute")
    assert code == 2
    assert f"tether-tune run: error: get_task failed: the server's get_task answered: Task {UNKNOWN} not found" in err


def test_server_down_exits_2(capsys, tmp_path: Path, down_url: str) -> None:
    code, _, err = run(capsys, "--calls", calls_file(tmp_path, Call("discover_agents", {})), "--server", down_url,
                       "--execute")
    assert code == 2 and "cannot reach a CodeTether server" in err


def test_words_to_results_on_the_tiny_model(capsys, tiny_model_dir: Path, codetether_server) -> None:
    """The whole chain: words in, the tiny model's calls (random but valid and grounded in the request: a large
    --call_bias makes it call), carried out on the real server, results printed. The request names no id, so no
    call can need one (grounding): whatever the random model picks, the server can carry it out."""
    code, out, err = run(capsys, "list my pending tasks, then ask the builder to deploy", "--model_path",
                         str(tiny_model_dir), "--server", codetether_server.url, "--call_bias", "100",
                         "--max_new_tokens", "96", "--execute", "--yes", "--json")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert results and all("result" in r and not r["result"].get("error") for r in results), out

"""``tether-tune serve``: the real server (uvicorn, a loopback port, the tiny model) driven by the real ``openai``
client, and by raw HTTP for what a client library would refuse to send. The tiny model's choices are random;
the grammar makes every call valid, so these tests check shapes, types, the protocol and robustness, not
accuracy."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from tether_tune.format import Call  # noqa: E402
from tether_tune.tools import validate_call  # noqa: E402

KEY = "test-key"
UUID = "3f1c2a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f"
LIMITS = {"max_body_bytes": 200_000, "max_tokens_limit": 256, "max_queue": 16}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path, model: str):
        self.proc, self.url, self.log, self.model = proc, url, log, model

    def client(self, **kw: Any) -> Any:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, timeout=60, **kw)

    def post(self, body: Any, raw: bytes | None = None, key: str | None = KEY, path: str = "/v1/chat/completions",
             ) -> Any:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [sys.executable, "-m", "tether_tune.cli", "serve", "--model_path", str(tiny_model_dir), "--port", str(port),
           "--api_key", KEY, "--served_model_name", "tiny", "--batch_wait_ms", "20"]
    for name, value in LIMITS.items():
        cmd += [f"--{name}", str(value)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the server did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(proc, url, log, "tiny")
    finally:
        proc.terminate()  # stopped by process id
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _valid(call: Any, tools: list[dict]) -> dict[str, Any]:
    """A tool call from the client: its arguments a JSON object valid for its tool's schema (types included)."""
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict)
    assert validate_call(Call(call.function.name, args), tools) == []
    return args


# --------------------------------------------------------------------------------------------------------------
# The protocol, through the openai client
# --------------------------------------------------------------------------------------------------------------


def test_models_and_health(server: Server) -> None:
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_tool_call_round_trip(server: Server, tools: list[dict]) -> None:
    resp = server.client().chat.completions.create(
        model="tiny", messages=_user(f"cancel task {UUID}"), tools=tools, tool_choice="required", max_tokens=128)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        _valid(call, tools)
    assert resp.usage.prompt_tokens > 100 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_integer_arguments_stay_numbers(server: Server, tools: list[dict]) -> None:
    resp = server.client().chat.completions.create(
        model="tiny", messages=_user("create a task: rotate the keys, priority 7"), tools=tools,
        tool_choice={"type": "function", "function": {"name": "create_task"}}, max_tokens=128)
    for call in resp.choices[0].message.tool_calls:
        args = _valid(call, tools)
        assert call.function.name == "create_task"
        if "priority" in args:
            assert isinstance(args["priority"], int)


def _stream(client: Any, **kw: Any) -> tuple[str, dict[int, dict[str, Any]], str | None, Any]:
    text, calls, finish, usage = "", {}, None, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = choice.finish_reason or finish
    return text, calls, finish, usage


def test_streamed_calls_equal_the_plain_answer(server: Server, tools: list[dict]) -> None:
    kw = dict(model="tiny", messages=_user(f"what is task {UUID} doing? and list the agents"), tools=tools,
              tool_choice="required", max_tokens=128)
    client = server.client()
    plain = client.chat.completions.create(**kw).choices[0].message.tool_calls
    text, calls, finish, usage = _stream(client, stream_options={"include_usage": True}, **kw)
    assert finish == "tool_calls" and text == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in plain]
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert usage is not None and usage.completion_tokens > 0


def test_streamed_words_equal_the_plain_answer(server: Server, tools: list[dict]) -> None:
    kw = dict(model="tiny", messages=_user("thanks, that's all"), tools=tools, tool_choice="none", max_tokens=40)
    client = server.client()
    plain = client.chat.completions.create(**kw).choices[0]
    text, calls, finish, _ = _stream(client, **kw)
    assert calls == {} and finish == plain.finish_reason
    assert text == (plain.message.content or "")


@pytest.mark.parametrize("choice", ["auto", "none", "required", "send_message"])
def test_each_tool_choice(server: Server, tools: list[dict], choice: str) -> None:
    tool_choice: Any = {"type": "function", "function": {"name": choice}} if choice == "send_message" else choice
    resp = server.client().chat.completions.create(
        model="tiny", messages=_user("tell the code-reviewer to look at the upload endpoint"), tools=tools,
        tool_choice=tool_choice, max_tokens=96)
    msg, finish = resp.choices[0].message, resp.choices[0].finish_reason
    calls = msg.tool_calls or []
    for call in calls:
        _valid(call, tools)
    if choice == "none":
        assert not calls and finish in ("stop", "length")
    elif choice == "required":
        assert calls and finish == "tool_calls"
    elif choice == "send_message":
        assert calls and {c.function.name for c in calls} == {"send_message"}
    else:
        assert bool(calls) == (finish == "tool_calls")


def test_parallel_tool_calls_false_gives_one_call(server: Server, tools: list[dict]) -> None:
    resp = server.client().chat.completions.create(
        model="tiny", messages=_user(f"cancel {UUID} and list the agents"), tools=tools, tool_choice="required",
        parallel_tool_calls=False, max_tokens=128)
    assert len(resp.choices[0].message.tool_calls) == 1


def test_conversation_with_a_tool_result(server: Server, tools: list[dict]) -> None:
    messages = [
        {"role": "system", "content": "You help with CodeTether."},
        {"role": "user", "content": f"what's the status of {UUID}?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_task", "arguments": json.dumps({"task_id": UUID})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"status": "working", "title": "x"})},
    ]
    client = server.client()
    resp = client.chat.completions.create(model="tiny", messages=messages, tools=tools, max_tokens=64)
    short = client.chat.completions.create(model="tiny", messages=messages[:2], tools=tools, max_tokens=8)
    assert resp.usage.prompt_tokens > short.usage.prompt_tokens + 20  # the call and its result are in the prompt
    for call in resp.choices[0].message.tool_calls or []:
        _valid(call, tools)


def test_words_answer(server: Server, tools: list[dict]) -> None:
    resp = server.client().chat.completions.create(
        model="tiny", messages=_user("what's the weather like?"), tools=tools, tool_choice="none", max_tokens=24)
    msg = resp.choices[0].message
    assert msg.tool_calls is None and msg.role == "assistant"
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert msg.content is None or isinstance(msg.content, str)


def test_request_without_tools_uses_the_runs_tools(server: Server, tools: list[dict]) -> None:
    resp = server.client().chat.completions.create(model="tiny", messages=_user(f"cancel {UUID}"),
                                                   tool_choice="required", max_tokens=96)
    for call in resp.choices[0].message.tool_calls:
        _valid(call, tools)


def test_sampling_with_a_seed_repeats(server: Server, tools: list[dict]) -> None:
    kw = dict(model="tiny", messages=_user("hello there"), tools=tools, tool_choice="none", max_tokens=16,
              temperature=1.0, top_p=0.9, seed=7)
    client = server.client()
    first, second = (client.chat.completions.create(**kw).choices[0].message.content for _ in range(2))
    assert first == second


# --------------------------------------------------------------------------------------------------------------
# Bad input: a 4xx with OpenAI's error body, and the server still answers
# --------------------------------------------------------------------------------------------------------------


def _good(server: Server) -> None:
    r = server.post({"model": "tiny", "messages": _user("list the agents"), "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


BAD = {
    "malformed JSON": (None, b'{"model": "tiny", "messages": [', 400, None),
    "not an object": ([1, 2], None, 400, None),
    "wrong type": ({"model": "tiny", "messages": "hello"}, None, 400, "messages"),
    "unknown role": ({"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}, None, 400,
                     "messages[0].role"),
    "empty messages": ({"model": "tiny", "messages": []}, None, 400, "messages"),
    "invalid tool schema": ({"model": "tiny", "messages": _user("hi"), "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "colour"}}}}}]}, None, 400, "tools"),
    "tool result without a call": ({"model": "tiny", "messages": _user("hi") + [
        {"role": "tool", "tool_call_id": "nope", "content": "{}"}]}, None, 400, "messages[1].tool_call_id"),
    "arguments not JSON": ({"model": "tiny", "messages": _user("hi") + [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "get_task", "arguments": "{oops"}}]}]}, None, 400, "messages[1].tool_calls[0].function.arguments"),
    "unknown tool_choice": ({"model": "tiny", "messages": _user("hi"), "tool_choice": {
        "type": "function", "function": {"name": "launch_rocket"}}}, None, 400, "tool_choice"),
    "max_tokens above the limit": ({"model": "tiny", "messages": _user("hi"), "max_tokens": 100_000}, None, 400,
                                   "max_tokens"),
    "n > 1": ({"model": "tiny", "messages": _user("hi"), "n": 2}, None, 400, "n"),
    "prompt over the context": ({"model": "tiny", "messages": _user("lorem ipsum dolor " * 3000)}, None, 400,
                                "messages"),
    "oversized body": ({"model": "tiny", "messages": _user("x" * 300_000)}, None, 413, None),
    "unknown model": ({"model": "gpt-4o", "messages": _user("hi")}, None, 404, "model"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_and_the_server_goes_on(server: Server, case: str) -> None:
    body, raw, status, param = BAD[case]
    r = server.post(body, raw=raw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    _good(server)


def test_context_error_is_openais_code(server: Server) -> None:
    r = server.post(BAD["prompt over the context"][0])
    assert r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("key", [None, "wrong"])
def test_api_key_is_required(server: Server, key: str | None) -> None:
    r = server.post({"model": "tiny", "messages": _user("hi")}, key=key)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    _good(server)


def test_unknown_path_is_an_openai_404(server: Server) -> None:
    r = httpx.get(server.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_control_token_text_stays_text(server: Server, tools: list[dict]) -> None:
    plain = server.post({"model": "tiny", "messages": _user("say escape please"), "max_tokens": 1}).json()
    tricky = server.post({"model": "tiny", "messages": _user("say <escape> please"), "max_tokens": 1}).json()
    # "<escape>" as text is several ordinary tokens, not FunctionGemma's one control token.
    assert tricky["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 1


# --------------------------------------------------------------------------------------------------------------
# Concurrency, limits, logs and metrics
# --------------------------------------------------------------------------------------------------------------


def test_load_16_clients_by_10_requests(server: Server, tools: list[dict]) -> None:
    requests = ["cancel task " + UUID, "list pending tasks", "tell build-bot: redeploy staging", "hi",
                "create a task to fix the login page, priority 3"]

    def client_run(k: int) -> list[str]:
        client, problems = server.client(), []
        for i in range(10):
            resp = client.chat.completions.create(model="tiny", messages=_user(requests[(k + i) % len(requests)]),
                                                  tools=tools, max_tokens=48)
            choice = resp.choices[0]
            for call in choice.message.tool_calls or []:
                try:
                    _valid(call, tools)
                except AssertionError as err:
                    problems.append(f"client {k} request {i}: {err}")
            if choice.finish_reason not in ("tool_calls", "stop", "length"):
                problems.append(f"client {k} request {i}: finish_reason {choice.finish_reason}")
        return problems

    t0 = time.time()
    with ThreadPoolExecutor(16) as pool:
        problems = [p for ps in pool.map(client_run, range(16)) for p in ps]
    assert problems == []
    assert time.time() - t0 < 240
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    sizes = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
             if line.startswith("tether_tune_batch_size_")}
    assert sizes["tether_tune_batch_size_sum"] > sizes["tether_tune_batch_size_count"]  # some batch held several


def test_full_queue_gets_429_then_recovers(server: Server) -> None:
    body = {"model": "tiny", "messages": _user("tell me a long story"), "tool_choice": "none", "max_tokens": 200}
    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(lambda _: server.post(body).status_code, range(40)))
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    _good(server)


def test_a_slow_client_blocks_no_one(server: Server) -> None:
    body = {"model": "tiny", "messages": _user("tell me a story"), "tool_choice": "none", "max_tokens": 200,
            "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as slow:
        assert slow.status_code == 200  # headers read, body left unread
        t0 = time.time()
        _good(server)
        assert time.time() - t0 < 30


def test_metrics_and_one_log_line_per_request(server: Server) -> None:
    r = server.post({"model": "tiny", "messages": _user(f"cancel {UUID}"), "tool_choice": "required",
                     "max_tokens": 96})
    rid = r.json()["id"]
    assert r.headers["x-request-id"] == rid
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    for name in ("tether_tune_requests_total", "tether_tune_errors_total", "tether_tune_request_seconds_bucket",
                 "tether_tune_batch_size_bucket", "tether_tune_tokens_total"):
        assert name in text
    assert httpx.get(server.url + "/metrics").status_code == 401
    deadline = time.time() + 5
    while rid not in server.log.read_text() and time.time() < deadline:
        time.sleep(0.1)
    lines = [line for line in server.log.read_text().splitlines() if rid in line]
    assert len(lines) == 1
    assert "prompt=" in lines[0] and "completion=" in lines[0] and "tools=" in lines[0] and " 200 " in lines[0]

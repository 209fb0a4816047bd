"""``tether-tune run "REQUEST" --server URL``: words in, calls out, calls carried out, results back.

Without ``--execute`` nothing is sent: the command prints the JSON-RPC it would send. ``cancel_task`` asks for
confirmation on the terminal unless ``--yes``. ``--calls FILE`` carries out a fixed prediction (what ``tether-tune
predict`` printed, or a JSON list of calls) instead of asking a model.

Exit status: 0 when every call was carried out (or shown, in a dry run); 1 when a call was skipped because its
confirmation was declined; 2 for an error (the server down, a call the server refused, a bad flag).
"""

from __future__ import annotations

import json as jsonlib
import sys
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import ConfigError, print_config, say
from ..errors import DataError, ServerError, ToolCallError
from ..format import Call
from ..predict import ModelOptions
from ..tools import load_tools, validate_call
from .client import DEFAULT_SERVER, DEFAULT_TIMEOUT_S, CodeTetherClient, rpc_url
from .execute import CallResult, dispatch_calls, dry_run_requests
from .show import describe_call, describe_result


@dataclass
class RunConfig(ModelOptions):
    """Turn a request into CodeTether calls and carry them out on a server (a dry run unless --execute)."""

    request: str | None = dc_field(default=None, metadata={"help": "what to do, in words", "positional": True})
    server: str = dc_field(default=DEFAULT_SERVER, metadata={
        "help": "the CodeTether server's MCP JSON-RPC address (its MCP_HTTP_PORT; http://HOST:PORT gets /mcp/v1/rpc)"})
    execute: bool = dc_field(default=False, metadata={
        "help": "carry the calls out (default: a dry run that prints the JSON-RPC it would send, and sends nothing)"})
    yes: bool = dc_field(default=False, metadata={"help": "do not ask before cancel_task"})
    json: bool = dc_field(default=False, metadata={"help": "print one JSON object per call instead of readable text"})
    calls: str | None = dc_field(default=None, metadata={
        "help": "carry out these calls instead of predicting: a JSON file, what `tether-tune predict` printed "
                '(an object with "calls") or a list of {"name", "arguments"}'})
    timeout: float = dc_field(default=DEFAULT_TIMEOUT_S, metadata={"help": "seconds to wait for each server answer"})

    def validate(self) -> None:
        if not self.request and not self.calls:
            raise ConfigError("REQUEST: give a request in words, or --calls FILE")
        if self.request and self.calls:
            raise ConfigError("REQUEST and --calls: give one of them (--calls replaces the model's prediction)")
        if self.calls and (not Path(self.calls).exists() or Path(self.calls).is_dir()):
            raise ConfigError(f"--calls {self.calls}: no such file")
        self.validate_model(check_model=not self.calls)  # --calls: no model is loaded
        try:
            rpc_url(self.server)
        except ServerError as err:
            raise ConfigError(str(err)) from None
        if self.timeout <= 0:
            raise ConfigError(f"--timeout {self.timeout}: must be more than 0 seconds")


def read_calls(path: str | Path) -> list[Call]:
    """Calls from a JSON file: ``tether-tune predict``'s object (``{"calls": [...]}``) or a list of calls."""
    source = str(path)
    try:
        data = jsonlib.loads(Path(path).read_text(encoding="utf-8"))
    except jsonlib.JSONDecodeError as err:
        raise DataError(source, None, f"line {err.lineno} column {err.colno}: not valid JSON: {err.msg}") from None
    items = data.get("calls") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise DataError(source, "calls", 'expected a list of calls, or an object with "calls"')
    calls = []
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(item.get("arguments", {}), dict)):
            raise DataError(source, f"calls[{i}]", 'expected {"name": TOOL, "arguments": {...}}')
        calls.append(Call.from_dict(item))
    return calls


def predict_calls(cfg: RunConfig) -> tuple[list[Call], str, list[dict[str, Any]]]:
    """``(calls, words answer, tools)``: from the model (``Predictor``), or from ``--calls``."""
    if cfg.calls:
        tools = load_tools(cfg.tools)
        return read_calls(cfg.calls), "", tools
    t0 = time.perf_counter()
    predictor = cfg.load_predictor()
    prediction = predictor.predict(cfg.request or "")
    say(f"[tether-tune] predicted in {time.perf_counter() - t0:.1f} s (model load included)")
    for error in prediction.errors:
        say(f"[tether-tune] left out: {error}")
    return prediction.calls, prediction.text, predictor.tools


def ask(call: Call) -> bool:
    """Ask on the terminal before a call that cannot be undone; anything but y/yes (or no answer) is no."""
    print(f"carry out {describe_call(call)}? This cannot be undone. [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
        if not sys.stdin.isatty():
            print(answer.strip(), file=sys.stderr)  # a piped answer was not echoed: end the prompt's line
    except (OSError, ValueError):  # no terminal to ask (stdin closed or captured)
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _emit(cfg: RunConfig, obj: Mapping[str, Any], lines: Sequence[str]) -> None:
    print(jsonlib.dumps(obj, ensure_ascii=False) if cfg.json else "\n".join(lines), flush=True)


def show_dry_run(cfg: RunConfig, calls: Sequence[Call]) -> None:
    url = rpc_url(cfg.server)
    if not cfg.json:
        print(f"dry run: nothing sent. With --execute, each call is a POST to {url} (after one tools/list):")
    for call, body in zip(calls, dry_run_requests(calls)):
        _emit(cfg, {"dry_run": True, "url": url, "call": call.to_dict(), "jsonrpc": body},
              [f"  {jsonlib.dumps(body, ensure_ascii=False)}"])
    if not cfg.json:
        print("add --execute to carry them out")


def execute_calls(cfg: RunConfig, calls: Sequence[Call], tools: Sequence[Mapping[str, Any]]) -> int:
    """Carry the calls out one by one, printing each result as it comes; 1 if one was skipped."""

    def show(i: int, res: CallResult) -> None:
        ms = "" if res.skipped else f" ({res.latency_s * 1000:.0f} ms)"
        _emit(cfg, res.to_dict(), [f"{i}. {res.call.name}{ms}"] + [f"   {line}" for line in describe_result(res)])

    with CodeTetherClient(cfg.server, tools=tools, timeout=cfg.timeout) as client:
        drift = client.connect()
        if drift.problems:
            say(f"[tether-tune] the server's tools differ from ours:\n{drift.report()}")
        results = dispatch_calls(calls, client, confirm=None if cfg.yes else ask, on_result=show)
    return 1 if any(r.skipped for r in results) else 0


def run_request(cfg: RunConfig) -> int:
    cfg.validate()
    print_config(cfg)
    calls, text, tools = predict_calls(cfg)
    for i, call in enumerate(calls, 1):
        errors = validate_call(call, tools)
        if errors:
            raise ToolCallError(f"call {i} ({call.name}) is not valid against the tools: {'; '.join(errors)}")
    if not calls:
        _emit(cfg, {"calls": [], "text": text}, [f"no calls: the answer is words: {text!r}"])
        return 0
    if not cfg.json:
        print(f"calls ({len(calls)}):\n" + "\n".join(f"  {i}. {describe_call(c)}" for i, c in enumerate(calls, 1)))
    if not cfg.execute:
        show_dry_run(cfg, calls)
        return 0
    return execute_calls(cfg, calls, tools)

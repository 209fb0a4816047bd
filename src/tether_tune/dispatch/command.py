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

from ..calibrate import CALL_BIAS_HELP, NEXT_CALL_BIAS_HELP
from ..config import ConfigError, print_config, say
from ..errors import DataError, ServerError, ToolCallError
from ..format import Call
from ..modeling import DTYPE_HELP, check_dtype, check_model_arg
from ..tools import TOOLS_HELP, load_tools, validate_call
from .client import DEFAULT_SERVER, DEFAULT_TIMEOUT_S, CodeTetherClient, rpc_url
from .execute import CallResult, dispatch_calls, dry_run_requests
from .show import describe_call, describe_result


@dataclass
class RunConfig:
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
    model_path: str = dc_field(default="./finetuned_model", metadata={
        "help": "training output dir (adapter), model dir, .gguf or preset"})
    tools: str | None = dc_field(default=None, metadata={"help": TOOLS_HELP + " (or those of the run in --model_path)"})
    constrained: bool = dc_field(default=True, metadata={"help": "decode under the tool schema: never an invalid call"})
    grounded: bool = dc_field(default=True, metadata={
        "help": "with --constrained: ids, names and free text only from the request"})
    call_bias: float | None = dc_field(default=None, metadata={"help": CALL_BIAS_HELP})
    next_call_bias: float | None = dc_field(default=None, metadata={"help": NEXT_CALL_BIAS_HELP})
    max_new_tokens: int = dc_field(default=128, metadata={"help": "stop after this many new tokens"})
    device: str = dc_field(default="auto", metadata={"help": "auto, cpu, cuda, ..."})
    dtype: str = dc_field(default="auto", metadata={"help": DTYPE_HELP})
    timeout: float = dc_field(default=DEFAULT_TIMEOUT_S, metadata={"help": "seconds to wait for each server answer"})

    def validate(self) -> None:
        if not self.request and not self.calls:
            raise ConfigError("REQUEST: give a request in words, or --calls FILE")
        if self.request and self.calls:
            raise ConfigError("REQUEST and --calls: give one of them (--calls replaces the model's prediction)")
        if self.calls and (not Path(self.calls).exists() or Path(self.calls).is_dir()):
            raise ConfigError(f"--calls {self.calls}: no such file")
        if not self.calls:
            check_model_arg("--model_path", self.model_path)
            check_dtype(self.dtype)
        try:
            rpc_url(self.server)
        except ServerError as err:
            raise ConfigError(str(err)) from None
        if self.timeout <= 0:
            raise ConfigError(f"--timeout {self.timeout}: must be more than 0 seconds")
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max_new_tokens {self.max_new_tokens}: must be at least 1")


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
    from ..predict import Predictor

    t0 = time.perf_counter()
    predictor = Predictor.load(cfg.model_path, tools=cfg.tools, device=cfg.device, dtype=cfg.dtype,
                               constrained=cfg.constrained, max_new_tokens=cfg.max_new_tokens, grounded=cfg.grounded,
                               call_bias=cfg.call_bias, next_call_bias=cfg.next_call_bias)
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

"""``tether-tune serve``: the OpenAI chat-completions API over a fine-tuned run (FastAPI + uvicorn).

Endpoints: ``POST /v1/chat/completions`` (JSON or, with ``stream``, server-sent events ending in ``data: [DONE]``),
``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus' text format, from ``prometheus_client``).
Every error is OpenAI's body (``{"error": {"message", "type", "param", "code"}}``) with a 4xx status; the server
answers a 500 only for a bug, and stays up. One log line per request.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..calibrate import CALL_BIAS_HELP, ENUM_BIAS_HELP, NEXT_CALL_BIAS_HELP, TOOL_BIAS_HELP
from ..config import ConfigError, print_config
from ..decoding import HEAD_LIMIT, HEAD_LIMIT_HELP
from ..format import MAX_NEW_TOKENS
from ..modeling import DTYPE_HELP, check_dtype, check_model_arg
from ..tools import TOOLS_HELP
from .engine import DeltaReader, Engine, Job, Outcome, tool_call_json
from .protocol import APIError, ChatRequest, refuse_unsupported, to_conversation, tool_choice_name, validation_error

log = logging.getLogger("tether_tune.serve")


@dataclass
class ServeConfig:
    """Serve a fine-tuned model over OpenAI's chat-completions API (point any OpenAI client at
    http://HOST:PORT/v1)."""

    model_path: str = field(default="./finetuned_model", metadata={
        "help": "training output dir (adapter), model dir, .gguf or preset"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address to listen on; the default is this machine only (0.0.0.0 exposes it: set --api_key)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    api_key: str | None = field(default=None, metadata={
        "help": "require 'Authorization: Bearer KEY' on /v1 and /metrics (default: $TETHER_TUNE_API_KEY, "
                "else none)"})
    served_model_name: str | None = field(default=None, metadata={
        "help": "the model id clients send and /v1/models lists (default: the --model_path directory's name)"})
    tools: str | None = field(default=None, metadata={
        "help": TOOLS_HELP + " (or those of the run): used when a request has no tools"})
    constrained: bool = field(default=True, metadata={
        "help": "decode under a grammar built from the request's tools and tool_choice (never an invalid call)"})
    grounded: bool = field(default=True, metadata={
        "help": "with --constrained: ids, names and free text only from what the user and the tools said"})
    call_bias: float | None = field(default=None, metadata={"help": CALL_BIAS_HELP})
    next_call_bias: float | None = field(default=None, metadata={"help": NEXT_CALL_BIAS_HELP})
    enum_bias: float | None = field(default=None, metadata={"help": ENUM_BIAS_HELP})
    tool_bias: float | None = field(default=None, metadata={"help": TOOL_BIAS_HELP})
    speculate: int = field(default=8, metadata={"help": "draft tokens copied from the request per forward (0: off)"})
    head_limit: int = field(default=HEAD_LIMIT, metadata={"help": HEAD_LIMIT_HELP})
    max_batch_size: int = field(default=8, metadata={"help": "requests decoded together at most"})
    batch_wait_ms: float = field(default=5.0, metadata={
        "help": "how long the first request of a batch waits for others (requests arriving while a batch decodes "
                "always join the next)"})
    max_queue: int = field(default=64, metadata={"help": "requests waiting or decoding at most; beyond: 429"})
    max_tokens_limit: int = field(default=1024, metadata={"help": "the largest max_tokens a request may ask"})
    default_max_tokens: int = field(default=MAX_NEW_TOKENS, metadata={"help": "max_tokens when a request gives none"})
    max_body_bytes: int = field(default=1 << 20, metadata={"help": "largest request body; beyond: 413"})
    cache_size: int = field(default=8, metadata={"help": "tool sets whose prefix cache and grammars are kept"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, ..."})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})

    def validate(self) -> None:
        check_model_arg("--model_path", self.model_path)
        check_dtype(self.dtype)
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port {self.port}: must be 1-65535 (0 is not allowed: clients need to know it)")
        for name in ("max_batch_size", "max_queue", "max_tokens_limit", "default_max_tokens", "max_body_bytes",
                     "cache_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} {getattr(self, name)}: must be at least 1")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError(f"--default_max_tokens {self.default_max_tokens} is above --max_tokens_limit "
                              f"{self.max_tokens_limit}")
        if self.speculate < 0 or self.batch_wait_ms < 0 or self.head_limit < 0:
            raise ConfigError("--speculate, --head_limit and --batch_wait_ms: must be 0 or more")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"--log_level {self.log_level!r}: debug, info, warning or error")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Metrics:
    """Prometheus metrics in a registry of their own (one app, one registry: tests start several)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("tether_tune_requests", "chat-completion requests by HTTP status", ["status"],
                                registry=self.registry)
        self.errors = Counter("tether_tune_errors", "requests answered with an error, by type", ["type"],
                              registry=self.registry)
        self.latency = Histogram("tether_tune_request_seconds", "time from request to complete answer",
                                 buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
                                 registry=self.registry)
        self.batch = Histogram("tether_tune_batch_size", "requests decoded together",
                               buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=self.registry)
        self.tokens = Counter("tether_tune_tokens", "tokens processed", ["kind"], registry=self.registry)


def _error_response(err: APIError) -> Any:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _message(outcome: Outcome) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": outcome.text or None, "refusal": None}
    if outcome.calls:  # a message's calls carry no "index" (only stream deltas do)
        msg["tool_calls"] = [{k: v for k, v in tool_call_json(c, i).items() if k != "index"}
                             for i, c in enumerate(outcome.calls)]
    return msg


def _usage(outcome: Outcome) -> dict[str, int]:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


def create_app(engine: Engine, model_name: str, api_key: str | None = None, max_tokens_limit: int = 1024,
               default_max_tokens: int = MAX_NEW_TOKENS, max_body_bytes: int = 1 << 20) -> Any:
    """The FastAPI app over ``engine`` (``Engine``). Start it with uvicorn; :func:`run_serve` does."""
    app = FastAPI(title="tether-tune", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    engine.on_batch = metrics.batch.observe
    created = int(time.time())

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise APIError("missing or incorrect API key (send 'Authorization: Bearer KEY')", status=401,
                           code="invalid_api_key")

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> Any:
        return _error_response(err)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Any:
        return _error_response(APIError(f"{request.method} {request.url.path}: {err.detail}", status=err.status_code,
                                        code="not_found" if err.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> Any:  # pragma: no cover - only a bug gets here
        log.exception("internal error on %s", request.url.path)
        return _error_response(APIError(f"internal error: {type(err).__name__}: {err}", status=500,
                                        type="server_error"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "pending": engine.pending}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        check_key(request)
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list",
                "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "tether-tune"}]}

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise APIError(f"the body is {declared} bytes; the limit is {max_body_bytes}", status=413,
                           code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise APIError(f"the body is over the {max_body_bytes}-byte limit", status=413,
                               code="request_too_large")
        return bytes(body)

    def parse(body: bytes) -> ChatRequest:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise APIError(f"the body is not valid JSON: {err}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise APIError("the body must be a JSON object", code="invalid_json")
        try:
            return ChatRequest.model_validate(data)
        except ValidationError as err:
            raise validation_error(err.errors(include_url=False)) from None

    def prepare(req: ChatRequest) -> Job:
        refuse_unsupported(req)
        if req.model != model_name:
            raise APIError(f"the model {req.model!r} does not exist; this server serves {model_name!r}",
                           status=404, param="model", code="model_not_found")
        max_tokens = req.max_completion_tokens or req.max_tokens or default_max_tokens
        if max_tokens > max_tokens_limit:
            raise APIError(f"max_tokens {max_tokens} is above this server's limit of {max_tokens_limit}",
                           param="max_completion_tokens" if req.max_completion_tokens else "max_tokens")
        sampling = None
        if req.temperature:
            import torch

            from ..decoding import Sampling

            generator = torch.Generator()
            generator.manual_seed(req.seed if req.seed is not None else int.from_bytes(os.urandom(4), "little"))
            sampling = Sampling(req.temperature, req.top_p if req.top_p is not None else 1.0, generator)
        return engine.prepare(to_conversation(req), tool_choice_name(req), req.parallel_tool_calls, max_tokens,
                              sampling)

    def finish(rid: str, status: int, t0: float, outcome: Outcome | None = None, err: APIError | None = None) -> None:
        seconds = time.perf_counter() - t0
        metrics.requests.labels(str(status)).inc()
        if err is not None:
            metrics.errors.labels(err.type).inc()
            log.info("%s %d %.3fs error=%s", rid, status, seconds, err.message)
            return
        assert outcome is not None
        metrics.latency.observe(seconds)
        metrics.tokens.labels("prompt").inc(outcome.prompt_tokens)
        metrics.tokens.labels("completion").inc(outcome.completion_tokens)
        tools = ",".join(c.name for c in outcome.calls) or "-"
        log.info("%s %d %.3fs prompt=%d completion=%d finish=%s tools=%s", rid, status, seconds,
                 outcome.prompt_tokens, outcome.completion_tokens, outcome.finish_reason, tools)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        rid, t0 = "chatcmpl-" + uuid.uuid4().hex[:24], time.perf_counter()
        try:
            check_key(request)
            req = parse(await read_body(request))
            job = prepare(req)
            if req.stream:
                loop = asyncio.get_running_loop()
                tokens: asyncio.Queue[list[int]] = asyncio.Queue()
                job.on_tokens = lambda t: loop.call_soon_threadsafe(tokens.put_nowait, list(t))
                future = asyncio.wrap_future(engine.submit(job))  # a 429 is still a status, not an event
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                events = _stream(engine, job, future, tokens, rid, model_name, include_usage,
                                 lambda o, e: finish(rid, 200, t0, o, e))
                return StreamingResponse(events, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Request-Id": rid})
            outcome: Outcome = await asyncio.wrap_future(engine.submit(job))
        except APIError as err:
            finish(rid, err.status, t0, err=err)
            return _error_response(err)
        finish(rid, 200, t0, outcome)
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_name,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": _message(outcome), "finish_reason": outcome.finish_reason,
                         "logprobs": None}],
            "usage": _usage(outcome),
        }, headers={"X-Request-Id": rid})

    return app


async def _stream(engine: Engine, job: Job, future: Any, tokens: asyncio.Queue, rid: str, model_name: str,
                  include_usage: bool, done: Any) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: the role, words as they come, each call when complete, the
    finish reason, the usage when asked, ``[DONE]``. ``tokens`` gets the job's tokens from the decoding thread."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                                "system_fingerprint": None,
                                "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None,
                                                              "finish_reason": finish}]}
        if usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def render(events: list[tuple[str, Any]]) -> list[str]:
        out = []
        for kind, value in events:
            if kind == "text":
                out.append(chunk({"content": value}))
            else:
                index, call = value
                out.append(chunk({"tool_calls": [tool_call_json(call, index)]}))
        return out

    reader = DeltaReader(engine, job.tools)
    yield chunk({"role": "assistant", "content": ""})
    while not future.done() or not tokens.empty():
        get = asyncio.ensure_future(tokens.get())
        finished, _ = await asyncio.wait({get, future}, return_when=asyncio.FIRST_COMPLETED)
        if get in finished:
            for line in render(reader.feed(get.result())):
                yield line
        else:
            get.cancel()
    try:
        outcome: Outcome = future.result()
    except Exception as err:  # pragma: no cover - a decoding bug: the client hears of it
        api_err = APIError(f"decoding failed: {type(err).__name__}: {err}", status=500, type="server_error")
        done(None, api_err)
        yield f"data: {json.dumps(api_err.body())}\n\n"
        yield "data: [DONE]\n\n"
        return
    for line in render(reader.rest(outcome)):
        yield line
    yield chunk({}, outcome.finish_reason)
    if include_usage:
        yield chunk({}, usage=_usage(outcome))
    done(outcome, None)
    yield "data: [DONE]\n\n"


def run_serve(cfg: ServeConfig) -> int:
    cfg.validate()
    if cfg.api_key is None:
        cfg.api_key = os.environ.get("TETHER_TUNE_API_KEY") or None
    print_config(cfg)
    import uvicorn

    from ..rundir import load_run

    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not _is_loopback(cfg.host) and not cfg.api_key:
        log.warning("listening on %s without --api_key: anyone who can reach this port can use the model", cfg.host)
    run = load_run(cfg.model_path, tools=cfg.tools, dtype=cfg.dtype, device=cfg.device)
    engine = Engine(run, cfg.constrained, cfg.grounded, cfg.speculate, cfg.max_batch_size, cfg.batch_wait_ms / 1000,
                    cfg.max_queue, cfg.cache_size, cfg.call_bias, cfg.next_call_bias, head_limit=cfg.head_limit,
                    enum_bias=cfg.enum_bias, tool_bias=cfg.tool_bias)
    name = cfg.served_model_name or os.path.basename(os.path.normpath(cfg.model_path))
    app = create_app(engine, name, cfg.api_key, cfg.max_tokens_limit, cfg.default_max_tokens, cfg.max_body_bytes)
    log.info("serving %s as %r on http://%s:%d/v1", cfg.model_path, name, cfg.host, cfg.port)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=False)
    finally:
        engine.close()
    return 0

"""OpenAI's chat-completions request, checked and turned into what our renderer takes.

The request models are pydantic (FastAPI validates the body with them); :func:`to_conversation` does what pydantic
cannot (roles in order, tool results matched to their calls, arguments that are JSON objects) and raises
:class:`APIError` naming the offending parameter the way OpenAI does (``messages[2].tool_call_id``).

Supported: ``model``, ``messages`` (system/developer first, user, assistant with ``tool_calls``, tool results),
``tools``, ``tool_choice`` (``auto``, ``none``, ``required``, one named function), ``parallel_tool_calls``,
``max_tokens``/``max_completion_tokens``, ``temperature`` (0 or absent: greedy; above 0: sampling) and ``top_p``,
``seed``, ``stream`` with ``stream_options.include_usage``, ``n`` = 1. Parameters that would change the answer and
that we do not implement (``n`` > 1, ``logprobs``, ``stop``, a ``response_format`` other than text, penalties) are
refused with a 400 rather than ignored; bookkeeping ones (``user``, ``metadata``, ``store``) are accepted and
ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from ..format import developer_message


class APIError(Exception):
    """An OpenAI-style error: HTTP ``status`` and ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Model):
    type: Literal["text"]
    text: str


Content = Union[str, list[TextPart], None]


class FunctionCall(_Model):
    name: str
    arguments: str  # a JSON object, as a string (OpenAI's shape)


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionDef(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(_Model):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Model):
    include_usage: bool = False


class ResponseFormat(_Model):
    type: str


class ChatRequest(_Model):
    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolDef] | None = None
    tool_choice: Union[Literal["auto", "none", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool = True
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    # Accepted only at the values that change nothing (see the module docstring).
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stop: Union[str, list[str], None] = None
    response_format: ResponseFormat | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


def refuse_unsupported(req: ChatRequest) -> None:
    """A 400 for each parameter whose value we would otherwise silently ignore."""
    if req.n != 1:
        raise APIError("n: only n=1 is supported (greedy decoding gives one answer)", param="n")
    if req.logprobs or req.top_logprobs:
        raise APIError("logprobs are not supported", param="logprobs")
    if req.stop:
        raise APIError("stop sequences are not supported: a turn ends at the model's own end-of-turn or calls",
                       param="stop")
    if req.response_format is not None and req.response_format.type != "text":
        raise APIError("response_format: only 'text' is supported (tool calls are constrained by the tools)",
                       param="response_format")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(req, name):
            raise APIError(f"{name} is not supported", param=name)
    if req.logit_bias:
        raise APIError("logit_bias is not supported", param="logit_bias")
    if req.stream_options is not None and not req.stream:
        raise APIError("stream_options is only allowed with stream: true", param="stream_options")


def _text(content: Content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


@dataclass
class Conversation:
    """A request as our renderer takes it: the developer context (system text, or None), the messages after the
    developer turn (``format.render_conversation`` shapes), the tools (OpenAI's shape is ours), and the texts
    grounded decoding may copy from (what the user and the tools said); ``asked``: the last message's text when it
    is the user's (``decoding``'s ``open_bias`` looks there for what it asks that no call has answered yet), else
    None."""

    developer: str | None
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    ground: str
    asked: str | None = None

    def render_messages(self, default_developer: str | None) -> list[dict[str, Any]]:
        return [developer_message(self.developer if self.developer is not None else default_developer),
                *self.messages]


def _arguments(call: ToolCall, where: str) -> dict[str, Any]:
    try:
        args = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError as err:
        raise APIError(f"{where}.function.arguments is not valid JSON: {err}", param=f"{where}.function.arguments")
    if not isinstance(args, dict):
        raise APIError(f"{where}.function.arguments must be a JSON object", param=f"{where}.function.arguments")
    return args


def _tool_result(content: str) -> dict[str, Any]:
    """A tool message's content as the object FunctionGemma renders: a JSON object as is, anything else under
    ``result``."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return {"result": content}
    return value if isinstance(value, dict) else {"result": value}


def to_conversation(req: ChatRequest) -> Conversation:
    """Check the message order and turn OpenAI's messages into ours."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    ground: list[str] = []
    call_names: dict[str, str] = {}
    for i, msg in enumerate(req.messages):
        where = f"messages[{i}]"
        if msg.role in ("system", "developer"):
            if messages:
                raise APIError(f"{where}: a {msg.role} message must come before the conversation "
                               "(FunctionGemma has one developer turn, first)", param=f"{where}.role")
            system.append(_text(msg.content).strip())
        elif msg.role == "user":
            text = _text(msg.content)
            if not text.strip():
                raise APIError(f"{where}.content: a user message needs text", param=f"{where}.content")
            messages.append({"role": "user", "content": text})
            ground.append(text)
        elif msg.role == "assistant":
            calls = []
            for j, call in enumerate(msg.tool_calls or []):
                calls.append({"name": call.function.name, "arguments": _arguments(call, f"{where}.tool_calls[{j}]")})
                call_names[call.id] = call.function.name
            messages.append({"role": "assistant", "content": _text(msg.content), "tool_calls": calls})
        else:  # tool
            name = call_names.get(msg.tool_call_id or "") or msg.name
            if msg.tool_call_id is None or msg.tool_call_id not in call_names:
                raise APIError(f"{where}.tool_call_id {msg.tool_call_id!r} answers no earlier assistant tool call",
                               param=f"{where}.tool_call_id")
            text = _text(msg.content)
            messages.append({"role": "tool", "content": {"name": name, "response": _tool_result(text)}})
            ground.append(text)
    if not messages:
        raise APIError("messages: the conversation needs a user message after the system one", param="messages")
    if messages[-1]["role"] == "assistant" and not messages[-1]["tool_calls"]:
        raise APIError("messages: the last message is the assistant's own answer; nothing is left to answer",
                       param="messages")
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    asked = messages[-1]["content"] if messages[-1]["role"] == "user" else None
    return Conversation("\n".join(system) if system else None, messages, tools, "\n".join(ground), asked)


def tool_choice_name(req: ChatRequest) -> str:
    """``auto`` (the default), ``none``, ``required`` or a function's name."""
    choice = req.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.function.name


def validation_error(errors: list[dict[str, Any]]) -> APIError:
    """pydantic's first complaint as OpenAI's 400: ``param`` in OpenAI's spelling (``messages[0].role``)."""
    err = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [p for p in err.get("loc", ()) if p != "body"]
    param = ""
    for p in loc:
        param += f"[{p}]" if isinstance(p, int) else (f".{p}" if param else str(p))
    msg = err.get("msg", "invalid value")
    return APIError(f"{param or 'body'}: {msg}", param=param or None, code="invalid_value")

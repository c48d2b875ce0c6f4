"""``ChatGPTOAuthProvider`` and ``AsyncChatGPTOAuthProvider``: the core's in-process
``Provider`` (no server, no socket) behind a Pythonic API.

Requests cross into Rust as Chat Completions JSON; answers come back as JSON and become the
dataclasses of ``_types``. Blocking calls release the GIL; async calls run on the shared
Tokio runtime and settle an asyncio future from its thread.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence, Union, cast

from . import _native
from ._types import AssistantResponse, Message, StreamEvent, ToolCall, ToolSchema, Usage

__all__ = ["ChatGPTOAuthProvider", "AsyncChatGPTOAuthProvider"]

MessageLike = Union[Message, Mapping[str, Any]]
Messages = Union[str, Sequence[MessageLike]]

# Chat Completions fields a call may set, beyond `messages` (each goes into the request body
# as is, except `tools`, `text` and `extra_body`, handled in `_chat_body`).
_CHAT_OPTIONS = frozenset(
    {
        "model",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "prompt_cache_key",
        "previous_response_id",
        "store",
        "subagent",
        "memgen_request",
        "service_tier",
        "text",
        "response_format",
        "verbosity",
        "user",
        "extra_body",
    }
)


def _message(m: MessageLike) -> dict[str, Any]:
    if isinstance(m, Message):
        return m.to_dict()
    if isinstance(m, Mapping):
        return dict(m)
    raise TypeError(f"a message must be a Message or a dict, not {type(m).__name__}")


def _messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [_message(m) for m in messages]


def _tool(t: ToolSchema | Mapping[str, Any]) -> dict[str, Any]:
    return t.to_dict() if isinstance(t, ToolSchema) else dict(t)


def _text_option(text: Mapping[str, Any], body: dict[str, Any]) -> None:
    """The Responses-style ``text`` option (``{"verbosity", "format"}``) as the Chat
    fields ``verbosity`` and ``response_format``."""
    unknown = set(text) - {"verbosity", "format"}
    if unknown:
        raise TypeError(f"text: unknown keys {sorted(unknown)} (use verbosity, format)")
    if "verbosity" in text:
        body["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return
    fmt = dict(fmt)
    if fmt.get("type") == "json_schema" and "json_schema" not in fmt:
        schema = {k: v for k, v in fmt.items() if k != "type"}
        fmt = {"type": "json_schema", "json_schema": schema}
    body["response_format"] = fmt


def _chat_body(default_model: str, messages: Messages, opts: Mapping[str, Any]) -> str:
    unknown = set(opts) - _CHAT_OPTIONS
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
    body: dict[str, Any] = {"model": default_model, "messages": _messages(messages)}
    for key, value in opts.items():
        if value is None or key in ("extra_body", "text"):
            continue
        if key == "tools":
            body["tools"] = [_tool(t) for t in value]
        elif key == "tool_choice" and isinstance(value, ToolSchema):
            body["tool_choice"] = {"type": "function", "function": {"name": value.name}}
        else:
            body[key] = value
    if opts.get("text") is not None:
        _text_option(opts["text"], body)
    if opts.get("extra_body"):
        body.update(opts["extra_body"])
    return json.dumps(body)


def _content_parts(content: Any, role: str | None) -> Any:
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            out.append({"type": "output_text" if role == "assistant" else "input_text", "text": part["text"]})
        elif kind == "image_url":
            url = part["image_url"]
            url = url["url"] if isinstance(url, Mapping) else url
            out.append({"type": "input_image", "image_url": url})
        else:
            out.append(part)
    return out


def _responses_input(messages: Messages) -> list[dict[str, Any]]:
    """Chat messages as Responses ``input`` items (the body ``/v1/compact`` takes)."""
    items: list[dict[str, Any]] = []
    for m in _messages(messages):
        role = m.get("role")
        if role == "tool":
            content = m.get("content")
            if not isinstance(content, str):
                content = json.dumps(content)
            items.append({"type": "function_call_output", "call_id": m["tool_call_id"], "output": content})
            continue
        if m.get("content") is not None:
            items.append({"type": "message", "role": role, "content": _content_parts(m["content"], role)})
        for call in m.get("tool_calls") or ():
            fn = call["function"]
            items.append(
                {"type": "function_call", "call_id": call["id"], "name": fn["name"], "arguments": fn["arguments"]}
            )
    return items


def _object(raw: str) -> dict[str, Any]:
    """A JSON object answered by the native side."""
    return cast("dict[str, Any]", json.loads(raw))


def _timeout_secs(timeout: float | None) -> int | None:
    if timeout is None:
        return None
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    return max(1, math.ceil(timeout))


class _Events:
    """``ChatEvent``s from the core → the event dicts of ``chat_stream``."""

    def __init__(self) -> None:
        self.usage: Usage | None = None

    def convert(self, raw: str) -> StreamEvent | None:
        ev = json.loads(raw)
        kind = ev["type"]
        if kind == "text":
            return {"type": "content", "content": ev["text"]}
        if kind == "reasoning":
            return {"type": "reasoning_delta", "reasoning_content": ev["text"]}
        if kind == "tool_call_end":
            return {"type": "tool_call", "index": ev["index"], "tool_call": ToolCall._from_native(ev["call"])}
        if kind == "usage":
            self.usage = Usage._from_native(ev["usage"])
            return None
        if kind == "finish":
            return {
                "type": "finish",
                "finish_reason": ev["reason"],
                "usage": self.usage,
                "response_id": ev["response_id"],
            }
        # tool_call_start / tool_call_delta: the whole call comes with tool_call_end.
        return None


class _Base:
    def __init__(
        self,
        model: str | None = None,
        auth_json_path: str | None = None,
        base_url: str | None = None,
        timeout: float | None = 300,
        *,
        demo: bool = False,
    ) -> None:
        self._native = _native.NativeProvider(
            model,
            None if auth_json_path is None else str(auth_json_path),
            base_url,
            _timeout_secs(timeout),
            demo,
        )

    @property
    def model(self) -> str:
        """The model used when a call names none."""
        return self._native.model

    @property
    def base_url(self) -> str:
        """The ChatGPT backend root in use."""
        return self._native.base_url

    def _image_body(self, prompt: str, opts: Mapping[str, Any]) -> str:
        return json.dumps({"prompt": prompt, **{k: v for k, v in opts.items() if v is not None}})

    def _inspect_body(self, images: Iterable[Any], prompt: str, opts: Mapping[str, Any]) -> str:
        body = {"prompt": prompt, "images": list(images), "model": self.model}
        body.update({k: v for k, v in opts.items() if v is not None})
        return json.dumps(body)

    def _compact_body(self, messages: Messages, opts: Mapping[str, Any]) -> str:
        body = {"model": self.model, "input": _responses_input(messages)}
        body.update({k: v for k, v in opts.items() if v is not None})
        return json.dumps(body)


class ChatGPTOAuthProvider(_Base):
    """A client of the ChatGPT Codex backend on your ChatGPT login, run in-process.

    Settings start from the environment as ``codex-as-api serve`` reads it
    (``CODEX_HOME``, ``CODEX_AS_API_*``); each argument overrides its variable:
    ``model`` (the default model), ``auth_json_path`` (default ``$CODEX_HOME/auth.json``),
    ``base_url`` (the backend root, default ``https://chatgpt.com/backend-api``) and
    ``timeout`` (seconds without a byte from the backend before a call fails).
    """

    def chat(self, messages: Messages, **opts: Any) -> AssistantResponse:
        """One whole answer. Options: ``tools``, ``tool_choice``, ``reasoning_effort``,
        ``prompt_cache_key``, ``previous_response_id``, ``subagent``, ``memgen_request``,
        ``service_tier``, ``text`` (and ``model``, ``response_format``, ``extra_body``, …)."""
        raw = self._native.call("chat", _chat_body(self.model, messages, opts))
        return AssistantResponse._from_native(json.loads(raw))

    def chat_stream(self, messages: Messages, **opts: Any) -> Iterator[StreamEvent]:
        """The answer as it is written: dicts with ``type`` ``content``, ``reasoning_delta``,
        ``tool_call`` (a whole call) and, last, ``finish``. An error before the answer
        begins raises here; closing the iterator cancels the request."""
        stream = self._native.chat_stream(_chat_body(self.model, messages, opts))
        return _iterate(stream)

    def generate_image(self, prompt: str, **opts: Any) -> dict[str, Any]:
        """An image (``size``, ``quality``, ``background``, ``n``, …) →
        ``{"created", "data": [{"b64_json"}]}``."""
        return _object(self._native.call("images", self._image_body(prompt, opts)))

    def inspect_images(self, images: Iterable[Any], prompt: str, **opts: Any) -> dict[str, Any]:
        """Describe images (URLs, data URLs or ``{"image_url": …}``) →
        ``{"id", "object": "inspect", "model", "text", "usage"}``."""
        return _object(self._native.call("inspect", self._inspect_body(images, prompt, opts)))

    def compact_messages(self, messages: Messages, **opts: Any) -> dict[str, Any]:
        """Compact a conversation → the compacted items (``{"output": [...], …}``)."""
        return _object(self._native.call("compact", self._compact_body(messages, opts)))

    def get_model_catalog(self) -> dict[str, Any]:
        """The models the backend offers (``{"object": "list", "data": [...]}``)."""
        return _object(self._native.call("models"))

    def get_usage(self) -> dict[str, Any]:
        """The accounts' rate-limit windows, plan and credits."""
        return _object(self._native.call("usage"))


def _iterate(stream: Any) -> Iterator[StreamEvent]:
    events = _Events()
    try:
        while (raw := stream.next()) is not None:
            ev = events.convert(raw)
            if ev is not None:
                yield ev
    finally:
        stream.close()


async def _settle(start: Callable[[Callable[[Any, Any], None]], Any]) -> Any:
    """Run a native async call (``start(done)`` → a task with ``cancel()``) as an awaitable."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def resolve(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def done(value: Any, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(resolve, value, error)
        except RuntimeError:  # the loop has closed: nobody is waiting
            pass

    task = start(done)
    try:
        return await future
    except asyncio.CancelledError:
        task.cancel()
        raise


class AsyncChatGPTOAuthProvider(_Base):
    """``ChatGPTOAuthProvider`` for asyncio: the same names, awaited (``chat_stream`` is an
    async iterator). Calls run on the package's Tokio runtime, not in threads."""

    async def chat(self, messages: Messages, **opts: Any) -> AssistantResponse:
        body = _chat_body(self.model, messages, opts)
        raw = await _settle(lambda done: self._native.call_async("chat", body, done))
        return AssistantResponse._from_native(json.loads(raw))

    async def chat_stream(self, messages: Messages, **opts: Any) -> AsyncIterator[StreamEvent]:
        body = _chat_body(self.model, messages, opts)
        stream = await _settle(lambda done: self._native.chat_stream_async(body, done))
        events = _Events()
        try:
            while (raw := await _settle(stream.next_async)) is not None:
                ev = events.convert(raw)
                if ev is not None:
                    yield ev
        finally:
            stream.close()

    async def _call(self, op: str, body: str | None = None) -> dict[str, Any]:
        raw = await _settle(lambda done: self._native.call_async(op, body, done))
        return _object(raw)

    async def generate_image(self, prompt: str, **opts: Any) -> dict[str, Any]:
        return await self._call("images", self._image_body(prompt, opts))

    async def inspect_images(self, images: Iterable[Any], prompt: str, **opts: Any) -> dict[str, Any]:
        return await self._call("inspect", self._inspect_body(images, prompt, opts))

    async def compact_messages(self, messages: Messages, **opts: Any) -> dict[str, Any]:
        return await self._call("compact", self._compact_body(messages, opts))

    async def get_model_catalog(self) -> dict[str, Any]:
        return await self._call("models")

    async def get_usage(self) -> dict[str, Any]:
        return await self._call("usage")

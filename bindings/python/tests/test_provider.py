"""The library against the emulator: sync and async chat, streams, tool calls, images,
errors, and the options' way into the request."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import pytest

import codex_as_api
from codex_as_api import (
    AssistantResponse,
    AsyncChatGPTOAuthProvider,
    ChatGPTOAuthError,
    ChatGPTOAuthProvider,
    InvalidRequestError,
    Message,
    MissingCredentialsError,
    RefreshFailedError,
    ToolCall,
    ToolSchema,
    UpstreamError,
    Usage,
)

WEATHER = ToolSchema(
    name="get_weather",
    description="The weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


def test_the_package_is_the_installed_wheel():
    package = Path(codex_as_api.__file__).resolve()
    assert package.is_relative_to(Path(sys.prefix).resolve()), package
    assert "site-packages" in package.parts, package
    native = Path(codex_as_api._native.__file__)
    assert native.suffix == ".so" and "abi3" in native.name, native


def test_chat_returns_a_frozen_assistant_response(provider):
    r = provider.chat([{"role": "user", "content": "hello there"}])
    assert isinstance(r, AssistantResponse)
    assert r.content
    assert r.finish_reason == "stop"
    assert r.tool_calls == ()
    assert r.response_id.startswith("chatcmpl-")
    assert isinstance(r.usage, Usage)
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.content = "changed"  # type: ignore[misc]


def test_chat_accepts_message_dataclasses_and_returns_tool_calls(provider):
    r = provider.chat(
        [Message("system", "Be brief."), Message("user", "EMU:parallel")], tools=[WEATHER]
    )
    assert r.finish_reason == "tool_calls"
    assert len(r.tool_calls) == 2
    assert r.tool_calls[0].id != r.tool_calls[1].id
    for call in r.tool_calls:
        assert isinstance(call, ToolCall)
        assert call.name == "get_weather"
        assert "city" in call.parsed_arguments()


def test_a_tool_result_goes_back_as_history(provider):
    first = provider.chat([Message("user", "EMU:tool")], tools=[WEATHER])
    (call,) = first.tool_calls
    r = provider.chat(
        [
            Message("user", "EMU:tool"),
            Message("assistant", None, tool_calls=(call,)),
            Message("tool", "sunny", tool_call_id=call.id),
            Message("user", "thanks"),
        ],
        tools=[WEATHER],
    )
    assert r.finish_reason == "stop" and r.content


def test_reasoning_content_is_returned(provider):
    r = provider.chat("EMU:reasoning", reasoning_effort="high")
    assert r.reasoning_content
    assert r.content


def test_a_blocking_call_releases_the_gil(provider):
    # The emulator paces 10 deltas 60 ms apart; meanwhile this thread must keep running.
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (provider.chat("EMU:pace:60 EMU:deltas:10"), done.set())
    )
    start = time.monotonic()
    last, longest_gap = start, 0.0
    worker.start()
    while not done.is_set():
        now = time.monotonic()
        longest_gap = max(longest_gap, now - last)
        last = now
    worker.join()
    took = time.monotonic() - start
    assert took >= 0.5, took
    assert longest_gap < took / 3, (longest_gap, took)


def test_chat_stream_yields_content_pieces_then_finish(provider):
    events = list(provider.chat_stream([{"role": "user", "content": "EMU:deltas:5"}]))
    pieces = [e["content"] for e in events if e["type"] == "content"]
    assert len(pieces) == 5, events
    finish = events[-1]
    assert finish["type"] == "finish", events
    assert finish["finish_reason"] == "stop"
    assert finish["response_id"].startswith("chatcmpl-")
    assert isinstance(finish["usage"], Usage) and finish["usage"].total_tokens > 0
    assert [e for e in events if e["type"] == "finish"] == [finish]


def test_chat_stream_yields_a_whole_tool_call(provider):
    events = list(
        provider.chat_stream([{"role": "user", "content": "EMU:tool"}], tools=[WEATHER.to_dict()])
    )
    calls = [e for e in events if e["type"] == "tool_call"]
    assert len(calls) == 1, events
    call = calls[0]["tool_call"]
    assert call.id.startswith("call_") and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "test"}
    assert events[-1]["type"] == "finish" and events[-1]["finish_reason"] == "tool_calls"


def test_chat_stream_yields_reasoning_deltas(provider):
    events = list(provider.chat_stream("EMU:reasoning"))
    reasoning = "".join(e["reasoning_content"] for e in events if e["type"] == "reasoning_delta")
    assert reasoning, events
    assert any(e["type"] == "content" for e in events)


def test_a_stream_closed_early_stops(provider):
    stream = provider.chat_stream("EMU:deltas:50")
    first = next(stream)
    assert first["type"] == "content"
    stream.close()
    assert list(stream) == []
    # The provider goes on serving after a cancelled stream.
    assert provider.chat("hello").content


def test_async_chat_and_concurrent_calls(async_provider):
    async def main():
        one = await async_provider.chat([Message("user", "hello")])
        many = await asyncio.gather(*(async_provider.chat(f"question {i}") for i in range(4)))
        return one, many

    one, many = asyncio.run(main())
    assert one.content and one.finish_reason == "stop"
    assert len({r.response_id for r in many}) == 4
    assert all(r.content for r in many)


def test_async_chat_stream(async_provider):
    async def main():
        pieces, calls, last = [], [], None
        async for ev in async_provider.chat_stream("EMU:deltas:5"):
            if ev["type"] == "content":
                pieces.append(ev["content"])
            last = ev
        async for ev in async_provider.chat_stream("EMU:tool", tools=[WEATHER]):
            if ev["type"] == "tool_call":
                calls.append(ev["tool_call"])
        return pieces, calls, last

    pieces, calls, last = asyncio.run(main())
    assert len(pieces) == 5
    assert last["type"] == "finish" and last["finish_reason"] == "stop"
    assert [c.parsed_arguments() for c in calls] == [{"city": "test"}]


def test_async_cancellation_leaves_the_provider_usable(async_provider):
    async def main():
        task = asyncio.ensure_future(async_provider.chat("EMU:pace:200 EMU:deltas:20"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await async_provider.chat("hello")

    assert asyncio.run(main()).content


def test_generate_image(provider):
    img = provider.generate_image("a red square", size="1024x1024")
    assert isinstance(img["created"], int)
    data = base64.b64decode(img["data"][0]["b64_json"])
    assert data.startswith(b"\x89PNG"), data[:16]


def test_async_generate_image(async_provider):
    img = asyncio.run(async_provider.generate_image("a blue circle"))
    assert base64.b64decode(img["data"][0]["b64_json"])


def test_inspect_images(provider):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
    r = provider.inspect_images([f"data:image/png;base64,{png}"], "What is this?")
    assert r["object"] == "inspect"
    assert r["text"]


def test_compact_messages(provider):
    r = provider.compact_messages(
        [
            Message("system", "Be brief."),
            Message("user", "hello"),
            Message("assistant", "Hi! How can I help?"),
        ]
    )
    assert r["output"], r


def test_model_catalog(provider):
    catalog = provider.get_model_catalog()
    assert catalog["object"] == "list"
    assert any(m["id"] == provider.model for m in catalog["data"]), catalog


def test_every_option_reaches_the_backend_and_continues_a_response(provider):
    first = provider.chat("remember: 42", store=True)
    r = provider.chat(
        "what did I say?",
        tools=[WEATHER],
        tool_choice="auto",
        reasoning_effort="low",
        prompt_cache_key="py-test-conversation",
        previous_response_id=first.response_id,
        subagent="review",
        memgen_request=False,
        service_tier="priority",
        text={"verbosity": "low"},
    )
    assert r.finish_reason == "stop" and r.content


def test_options_map_into_the_chat_request():
    from codex_as_api._provider import _chat_body

    body = json.loads(
        _chat_body(
            "gpt-5.5",
            [Message("user", "hi")],
            {
                "tools": [WEATHER],
                "tool_choice": WEATHER,
                "subagent": "review",
                "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
                "extra_body": {"user": "u1"},
            },
        )
    )
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["tools"] == [WEATHER.to_dict()]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["subagent"] == "review"
    assert body["verbosity"] == "low"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "object"}},
    }
    assert body["user"] == "u1"
    assert "text" not in body and "extra_body" not in body


def test_an_unknown_option_is_a_type_error(provider):
    with pytest.raises(TypeError, match="temprature"):
        provider.chat("hi", temprature=0.2)


def test_usage_limit_is_an_upstream_error_with_status(provider, async_provider):
    with pytest.raises(UpstreamError) as info:
        provider.chat("EMU:429")
    e = info.value
    assert isinstance(e, ChatGPTOAuthError)
    assert e.status == 429 and e.kind == "UsageLimit"
    assert e.retry_after is not None and e.retry_after > 0
    # A stream fails before its first event; so does an awaited call.
    with pytest.raises(UpstreamError) as info:
        provider.chat_stream("EMU:429")
    assert info.value.status == 429
    with pytest.raises(UpstreamError) as info:
        asyncio.run(async_provider.chat("EMU:429"))
    assert info.value.status == 429


def test_a_malformed_request_is_an_invalid_request_error(provider):
    with pytest.raises(InvalidRequestError) as info:
        provider.chat([])
    assert info.value.status == 400
    assert "messages" in str(info.value)


def test_no_login_is_a_missing_credentials_error(emulator, tmp_path):
    with pytest.raises(MissingCredentialsError) as info:
        missing = tmp_path / "none.json"
        ChatGPTOAuthProvider(auth_json_path=missing, base_url=emulator.upstream_url).chat("hello")
    assert info.value.status == 401
    assert "login" in str(info.value)


def expired_jwt() -> str:
    def part(v: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'exp': 1})}.sig"


def test_a_refresh_the_token_endpoint_refuses_is_a_refresh_failed_error(emulator, tmp_path):
    doc = json.loads(emulator.auth_json.read_text())
    doc["tokens"]["access_token"] = expired_jwt()
    doc["tokens"]["refresh_token"] = "rt_never_issued"
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps(doc))
    provider = ChatGPTOAuthProvider(auth_json_path=auth, base_url=emulator.upstream_url)
    with pytest.raises(RefreshFailedError) as info:
        provider.chat("hello")
    assert not isinstance(info.value, MissingCredentialsError)
    assert info.value.kind == "RefreshFailed"
    assert info.value.status == 401
    assert "sign" in str(info.value).lower()


def test_a_bad_setting_raises_at_construction(codex_home):
    with pytest.raises(ValueError):
        ChatGPTOAuthProvider(timeout=0)
    with pytest.raises(InvalidRequestError):
        AsyncChatGPTOAuthProvider(timeout=10**9)


def test_demo_mode_needs_no_login(codex_home):
    r = ChatGPTOAuthProvider(demo=True).chat("hello")
    assert r.content and r.finish_reason == "stop"

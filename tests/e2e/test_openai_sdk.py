"""The official OpenAI Python SDK against codex-as-api (its emulator upstream).

Run by tests/sdk.rs, which starts the server and sets CODEX_AS_API_BASE_URL.
"""
import json
import os

import openai
import pytest

BASE = os.environ["CODEX_AS_API_BASE_URL"]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client():
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key="sk-local", max_retries=0)


def test_non_stream_completion(client):
    r = client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "hello sdk"}])
    assert r.object == "chat.completion"
    assert r.model == "gpt-5.5"
    assert r.choices[0].message.content == "You said: hello sdk"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_completion(client):
    stream = client.chat.completions.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "stream sdk"}], stream=True
    )
    text, finish, ids = "", None, set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text == "You said: stream sdk"
    assert finish == "stop"
    assert len(ids) == 1


def test_include_usage(client):
    stream = client.chat.completions.create(
        model="gpt-5.5",
        messages=[{"role": "user", "content": "usage please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_tool_round_trip(client):
    messages = [{"role": "user", "content": "EMU:tool"}]
    first = client.chat.completions.create(model="gpt-5.5", messages=messages, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test"}
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "22 C and sunny"})
    second = client.chat.completions.create(model="gpt-5.5", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "Tool output: 22 C and sunny"


def test_streamed_parallel_tool_calls(client):
    stream = client.chat.completions.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "EMU:parallel"}], tools=[WEATHER], stream=True
    )
    calls = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
            if tc.id:
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["args"] += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] != calls[1]["id"]
    for c in calls.values():
        assert c["name"] == "get_weather"
        json.loads(c["args"])
    assert finish == "tool_calls"


def test_image_input(client):
    r = client.chat.completions.create(
        model="gpt-5.5",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content == "You said: what is this [images: 1]"


def test_errors_raise_the_right_sdk_exceptions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "EMU:context"}])
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "EMU:429"}])


def test_responses_create_non_stream(client):
    r = client.responses.create(
        model="gpt-5.5",
        instructions="Be brief.",
        input="hello responses sdk",
        temperature=0.3,
        max_output_tokens=64,
    )
    assert r.object == "response"
    assert r.status == "completed"
    assert r.output_text == "You said: hello responses sdk"
    assert r.usage.total_tokens > 0
    # Chaining through the local exchange store.
    r2 = client.responses.create(model="gpt-5.5", input="and again", previous_response_id=r.id)
    assert r2.output_text == "You said: and again"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-5.5", input="x", previous_response_id="resp_unknown")
    assert "resp_unknown" in str(e.value)


def test_responses_create_stream(client):
    events = list(client.responses.create(model="gpt-5.5", input="stream responses sdk", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "You said: stream responses sdk"
    assert events[-1].response.output_text == "You said: stream responses sdk"


def test_responses_stream_helper(client):
    with client.responses.stream(model="gpt-5.5", input="helper") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "You said: helper"


def test_images_generate(client):
    r = client.images.generate(prompt="a red square", n=2, size="1024x1024", quality="high")
    assert len(r.data) == 2
    assert r.data[0].b64_json.startswith("iVBORw0KGgo")
    assert "a red square" in r.data[0].revised_prompt
    r = client.images.generate(prompt="a blue square", response_format="url")
    assert r.data[0].url.startswith("data:image/png;base64,")
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="x", n=50)


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-5.5" in ids
    m = client.models.retrieve("gpt-6.1-terra")
    assert m.id == "gpt-6.1-terra"
    assert m.context_window == 500000
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")

"""The official Anthropic Python SDK against codex-as-api (its emulator upstream).

Run by tests/sdk.rs, which starts the server and sets CODEX_AS_API_BASE_URL.
"""
import os

import anthropic
import pytest

BASE = os.environ["CODEX_AS_API_BASE_URL"]
BASH = {
    "name": "Bash",
    "description": "Executes a bash command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}


@pytest.fixture
def client():
    return anthropic.Anthropic(base_url=BASE, api_key="sk-local", max_retries=0)


def test_non_stream_message(client):
    m = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, system="Be brief.",
        messages=[{"role": "user", "content": "hello anthropic"}],
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.model == "claude-sonnet-4-5"
    assert m.content[0].type == "text"
    assert m.content[0].text == "You said: hello anthropic"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_stream_through_the_event_accumulator(client):
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=1024,
        messages=[{"role": "user", "content": "stream anthropic"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: stream anthropic"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_tool_round_trip(client):
    messages = [{"role": "user", "content": 'EMU:tool:Bash {"command":"echo 41"}'}]
    first = client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, tools=[BASH], messages=messages)
    assert first.stop_reason == "tool_use"
    use = [b for b in first.content if b.type == "tool_use"][0]
    assert use.name == "Bash" and use.input == {"command": "echo 41"}
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "41"}]})
    second = client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, tools=[BASH], messages=messages)
    assert second.content[0].text == "Tool output: 41"


def test_streamed_tool_use_and_thinking_round_trip(client):
    messages = [{"role": "user", "content": "EMU:reasoning_tool"}]
    with client.messages.stream(
        model="claude-opus-5-5", max_tokens=4096, tools=[BASH],
        thinking={"type": "adaptive"}, messages=messages,
    ) as stream:
        first = stream.get_final_message()
    kinds = [b.type for b in first.content]
    assert kinds[0] == "thinking" and "tool_use" in kinds, kinds
    assert first.content[0].signature
    use = [b for b in first.content if b.type == "tool_use"][0]
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "done"}]})
    second = client.messages.create(model="claude-opus-5-5", max_tokens=4096, tools=[BASH], messages=messages)
    assert second.content[-1].text == "Tool output: done"


def test_count_tokens(client):
    r = client.messages.count_tokens(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "How many tokens is this sentence?"}],
        tools=[BASH],
    )
    assert r.input_tokens > 5


def test_errors_raise_the_right_sdk_exceptions(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "EMU:context"}])
    assert "prompt is too long" in str(e.value)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "EMU:429"}])


def test_models_list_in_anthropic_shape(client):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert "gpt-5.5" in ids
    assert page.has_more is False
    assert page.first_id == ids[0]
    m = client.models.retrieve("gpt-5.5")
    assert m.type == "model" and m.id == "gpt-5.5"


def test_compact_then_continue(client):
    cp = client.post(
        "/v1/messages/compact",
        cast_to=object,
        body={"model": "claude-sonnet-4-5", "max_tokens": 256,
              "messages": [{"role": "user", "content": "a long history"}]},
    )
    assert cp["type"] == "message" and cp["content"][0]["type"] == "compaction"
    m = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256,
        messages=[{"role": "user", "content": "a long history"},
                  {"role": "assistant", "content": cp["content"]},
                  {"role": "user", "content": "next step"}],
    )
    assert m.content[0].text == "You said: next step"

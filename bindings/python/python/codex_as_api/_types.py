"""The frozen dataclasses of requests and answers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, TypedDict, Union

__all__ = [
    "Message",
    "ToolCall",
    "ToolSchema",
    "Usage",
    "AssistantResponse",
    "ContentEvent",
    "ReasoningEvent",
    "ToolCallEvent",
    "FinishEvent",
    "StreamEvent",
]


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool by the model; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """``arguments`` decoded from JSON."""
        return json.loads(self.arguments)

    def to_dict(self) -> dict[str, Any]:
        """The Chat Completions ``tool_calls`` entry."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def _from_native(cls, d: Mapping[str, Any]) -> ToolCall:
        return cls(id=d["id"], name=d["name"], arguments=d["arguments"])


@dataclass(frozen=True)
class Message:
    """One chat message (``role`` is ``system``, ``developer``, ``user``, ``assistant`` or
    ``tool``); ``content`` is text or a list of Chat Completions content parts."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The Chat Completions message."""
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            d["name"] = self.name
        return d


@dataclass(frozen=True)
class ToolSchema:
    """A function the model may call; ``parameters`` is its JSON Schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    strict: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The Chat Completions ``tools`` entry."""
        fn: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            fn["description"] = self.description
        if self.strict is not None:
            fn["strict"] = self.strict
        return {"type": "function", "function": fn}


@dataclass(frozen=True)
class Usage:
    """Token usage of one answer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def _from_native(cls, d: Mapping[str, Any] | None) -> Usage | None:
        if d is None:
            return None
        return cls(
            prompt_tokens=d["prompt_tokens"],
            completion_tokens=d["completion_tokens"],
            total_tokens=d["total_tokens"],
            cached_tokens=d["cached_tokens"],
            reasoning_tokens=d["reasoning_tokens"],
        )


@dataclass(frozen=True)
class AssistantResponse:
    """A whole chat answer. ``finish_reason`` is ``stop``, ``tool_calls``, ``length`` or
    ``content_filter``; ``response_id`` can be passed back as ``previous_response_id``."""

    content: str
    finish_reason: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage | None
    reasoning_content: str | None
    response_id: str

    @classmethod
    def _from_native(cls, d: Mapping[str, Any]) -> AssistantResponse:
        return cls(
            content=d["content"],
            finish_reason=d["finish_reason"],
            tool_calls=tuple(ToolCall._from_native(c) for c in d["tool_calls"]),
            usage=Usage._from_native(d["usage"]),
            reasoning_content=d["reasoning_content"],
            response_id=d["response_id"],
        )


class ContentEvent(TypedDict):
    """A piece of the answer's text."""

    type: Literal["content"]
    content: str


class ReasoningEvent(TypedDict):
    """A piece of the reasoning summary."""

    type: Literal["reasoning_delta"]
    reasoning_content: str


class ToolCallEvent(TypedDict):
    """A whole tool call (sent once its arguments are complete)."""

    type: Literal["tool_call"]
    index: int
    tool_call: ToolCall


class FinishEvent(TypedDict):
    """The last event of every stream."""

    type: Literal["finish"]
    finish_reason: str
    usage: Usage | None
    response_id: str


StreamEvent = Union[ContentEvent, ReasoningEvent, ToolCallEvent, FinishEvent]

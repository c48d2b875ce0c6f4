"""codex-as-api: your ChatGPT subscription as a Python client, in-process.

    >>> from codex_as_api import ChatGPTOAuthProvider
    >>> provider = ChatGPTOAuthProvider()            # reads ~/.codex/auth.json
    >>> provider.chat([{"role": "user", "content": "hi"}]).content

The ``codex-as-api`` command (``python -m codex_as_api``) runs the OpenAI- and
Anthropic-compatible server.
"""

from ._errors import (
    ChatGPTOAuthError,
    InvalidRequestError,
    MissingCredentialsError,
    ModelNotFoundError,
    RefreshFailedError,
    UpstreamError,
)
from ._native import __version__
from ._provider import AsyncChatGPTOAuthProvider, ChatGPTOAuthProvider
from ._types import (
    AssistantResponse,
    ContentEvent,
    FinishEvent,
    Message,
    ReasoningEvent,
    StreamEvent,
    ToolCall,
    ToolCallEvent,
    ToolSchema,
    Usage,
)

__all__ = [
    "AssistantResponse",
    "AsyncChatGPTOAuthProvider",
    "ChatGPTOAuthError",
    "ChatGPTOAuthProvider",
    "ContentEvent",
    "FinishEvent",
    "InvalidRequestError",
    "Message",
    "MissingCredentialsError",
    "ModelNotFoundError",
    "ReasoningEvent",
    "RefreshFailedError",
    "StreamEvent",
    "ToolCall",
    "ToolCallEvent",
    "ToolSchema",
    "UpstreamError",
    "Usage",
    "__version__",
]

"""The exception hierarchy, and its mapping from the Rust core's error kinds."""

from __future__ import annotations

__all__ = [
    "ChatGPTOAuthError",
    "InvalidRequestError",
    "MissingCredentialsError",
    "RefreshFailedError",
    "ModelNotFoundError",
    "UpstreamError",
]


class ChatGPTOAuthError(Exception):
    """Every error of this package.

    ``kind`` is the core's error kind (``"UsageLimit"``, ``"BadRequest"``, …), ``status``
    the HTTP status the server would answer with, ``code`` the OpenAI error code when there
    is one and ``retry_after`` the seconds to wait before trying again, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "Internal",
        status: int = 500,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.code = code
        self.retry_after = retry_after


class InvalidRequestError(ChatGPTOAuthError):
    """The request is malformed, too large, or does not fit the model's context window."""


class MissingCredentialsError(ChatGPTOAuthError):
    """No usable ChatGPT login: run ``codex login`` (or ``codex-as-api login``)."""


class RefreshFailedError(ChatGPTOAuthError):
    """The access token could not be refreshed: sign in again."""


class ModelNotFoundError(ChatGPTOAuthError):
    """The backend does not know the model."""


class UpstreamError(ChatGPTOAuthError):
    """The ChatGPT backend failed or refused (usage limit, rate limit, 5xx, timeout, …);
    ``status`` is the HTTP status."""


_INVALID = {
    "BadRequest",
    "ContextLengthExceeded",
    "NotFound",
    "PayloadTooLarge",
    "HeadersTooLarge",
    "RequestTimeout",
    "NotImplemented",
}


def _from_native(
    kind: str, status: int, message: str, code: str | None, retry_after: int | None
) -> ChatGPTOAuthError:
    """Called by the native module for each error it raises."""
    cls: type[ChatGPTOAuthError]
    if kind in _INVALID:
        cls = InvalidRequestError
    elif kind == "ModelNotFound":
        cls = ModelNotFoundError
    elif kind in ("AuthUnavailable", "Unauthorized"):
        cls = MissingCredentialsError
    elif kind == "RefreshFailed":
        cls = RefreshFailedError
    elif kind == "Internal":
        cls = ChatGPTOAuthError
    else:
        cls = UpstreamError
    return cls(message, kind=kind, status=status, code=code, retry_after=retry_after)

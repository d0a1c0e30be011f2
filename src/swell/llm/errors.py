"""The errors of the LLM API, each with the HTTP status and OpenAI error shape it answers with.

::

    SwellError
    └── LLMError                        (500, "internal_server_error")
        ├── InvalidRequestError         (400, "invalid_request_error"; also ValueError)
        │   └── ContextLengthExceededError   the prompt (plus max_tokens) does not fit
        ├── ModelNotFoundError          (404) no model with the requested id is served
        └── EngineOverloadedError       (503) the engine's queue is full; also BackPressureError
"""

from __future__ import annotations

from swell.exceptions import BackPressureError, SwellError


class LLMError(SwellError):
    """Base class of the LLM API's errors; answered as ``{"error": {...}}`` with status_code."""

    status_code: int = 500
    error_type: str = "internal_server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps `param` when the error is pickled across processes (handles, replicas).
        return (_rebuild, (type(self), self.message, self.param, dict(self.__dict__)))


def _rebuild(
    cls: type[LLMError], message: str, param: str | None, state: dict[str, object]
) -> LLMError:
    error = cls.__new__(cls)
    LLMError.__init__(error, message, param=param)
    error.__dict__.update(state)
    return error


class InvalidRequestError(LLMError, ValueError):
    """The request cannot be served as given; the message says which field and why (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    """The prompt, plus the tokens asked for, is longer than the model's context (HTTP 400)."""

    code = "context_length_exceeded"

    def __init__(
        self,
        *,
        prompt_tokens: int,
        max_tokens: int | None,
        context_length: int,
        param: str = "prompt",
    ) -> None:
        where = "messages" if param == "messages" else "prompt"
        if max_tokens is None or prompt_tokens >= context_length:
            message = (
                f"This model's maximum context length is {context_length} tokens. However, "
                f"your {where} is {prompt_tokens} tokens long. Shorten the {where}."
            )
        else:
            message = (
                f"This model's maximum context length is {context_length} tokens. However, you "
                f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, "
                f"{max_tokens} in the completion). Reduce the length of the {where} or "
                f"max_tokens."
            )
        super().__init__(message, param=param)
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length


class ModelNotFoundError(LLMError):
    """No model with the requested id is served here (HTTP 404)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class EngineOverloadedError(BackPressureError, LLMError):
    """The engine has as many requests waiting as it accepts; retry later (HTTP 503)."""

    status_code = 503
    error_type = "service_unavailable_error"
    code = "overloaded"

"""The interface between the OpenAI API and an inference engine.

The API sends a :class:`GenerationRequest` and iterates :class:`GenerationChunk` objects.
Both are plain dataclasses so that they can cross a process boundary (a deployment handle)
as they are. :class:`LLMBackend` is all the API needs (an in-process engine, or a proxy for
one in another replica); :class:`LLMEngine` is what an engine implements on top of it.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Literal, Protocol, runtime_checkable

from swell.llm.errors import ContextLengthExceededError, InvalidRequestError

FinishReason = Literal["stop", "length"]
# How a request ended in the engine: as a generation does, or stopped early.
DoneReason = Literal["stop", "length", "cancelled", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of a conversation, as a chat template takes it."""

    role: str
    content: str


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate: from a raw ``prompt`` or from chat ``messages``.

    Sampling follows OpenAI's meaning: ``temperature`` 0 is greedy; ``top_p`` 1 and the
    penalties at 0 disable those. ``max_tokens`` None generates until the model stops or the
    context is full. Generation stops before the first of the ``stop`` strings, which is left
    out of the text.
    """

    request_id: str
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequestError("give exactly one of prompt and messages")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequestError(
                f"max_tokens must be at least 1, got {self.max_tokens}", param="max_tokens"
            )

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationChunk:
    """What one step of generation produced.

    ``text`` is the new text since the previous chunk (possibly empty). ``prompt_tokens`` and
    ``completion_tokens`` are totals so far, so the last chunk carries the usage. The last
    chunk, and only it, has a ``finish_reason``: ``"stop"`` (the model ended, or a stop string
    was met) or ``"length"`` (max_tokens or the context was reached).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RequestDone:
    """What became of one request in the engine, reported once it stopped working on it.

    ``cancelled``: its consumer went away (or the engine stopped) and the engine stopped
    generating for it; ``completion_tokens`` is how far it got.
    """

    request_id: str
    reason: DoneReason
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class LLMBackend(Protocol):
    """What the OpenAI API calls: an engine here, or a proxy for one elsewhere.

    ``generate`` raises :class:`~swell.llm.errors.ContextLengthExceededError` before its first
    chunk when the request does not fit, and
    :class:`~swell.llm.errors.EngineOverloadedError` when it cannot take more requests.
    Closing the iterator early (``aclose()``, or cancelling the task iterating it) stops the
    generation.
    """

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...


class LLMEngine(abc.ABC):
    """An inference engine: loads one model, generates text for many concurrent requests."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model; returns when requests can be served."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream the generation for one request (an async generator)."""

    @property
    @abc.abstractmethod
    def context_length(self) -> int:
        """The most tokens, prompt and completion together, that one sequence may have."""

    @abc.abstractmethod
    def count_tokens(self, prompt: str) -> int:
        """How many tokens ``prompt`` is, as :meth:`generate` would feed it to the model."""

    @abc.abstractmethod
    def apply_chat_template(self, messages: Sequence[ChatTurn]) -> str:
        """The prompt the model's chat template makes of ``messages``, ready to generate."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop generating, release the model. Idempotent."""


def check_context(
    *, prompt_tokens: int, max_tokens: int | None, context_length: int, is_chat: bool
) -> None:
    """Raise ContextLengthExceededError unless the prompt and max_tokens fit in the context."""
    needed = prompt_tokens + (max_tokens if max_tokens is not None else 1)
    if prompt_tokens >= context_length or needed > context_length:
        raise ContextLengthExceededError(
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            context_length=context_length,
            param="messages" if is_chat else "prompt",
        )

"""Answers from any OpenAI-compatible chat endpoint (a hosted API, or a vLLM or llama.cpp server).

Requests run ``concurrency`` at a time. A request that meets a 408, 409, 429 or 5xx status, a timeout or a
dropped connection is retried with exponential backoff (the server's ``Retry-After`` wins when it gives one);
any other error, or a request still failing after ``max_retries`` retries, stops the run (answers already
written are kept, so the same command resumes). The key is read from the environment variable named by
``api_key_env`` and never written to logs or files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol, TypeVar

from safemix.errors import InputError
from safemix.generate.base import Generator, make_generation, record_prompt
from safemix.generate.config import DecodingConfig, OpenAIConfig
from safemix.records import FinishReason, Generation, Prompt
from safemix.retry import call_with_retries

log = logging.getLogger(__name__)

_RETRY_STATUSES = {408, 409, 429}
_NO_KEY = "no-key"  # servers without authentication still need some bearer value from the client
_FAILURE_CHARS = 120
T = TypeVar("T")


class EmptyReply(RuntimeError):
    """A 200 reply without a choice to read (retried like a server error)."""


def read_api_key(settings: OpenAIConfig) -> str:
    """The API key from the environment; a placeholder when ``api_key_env`` is empty.

    Raises:
        InputError: the named variable is not set.
    """
    if not settings.api_key_env:
        return _NO_KEY
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise InputError(f"generate.openai.api_key_env: environment variable {settings.api_key_env} is not set "
                         "(set it, or set api_key_env to '' for a server without a key)")
    return key


class PromptEncoder(Protocol):
    """Turns a prompt into the model's input tokens with safemix's template, and answer tokens into text, for a
    server that runs safemix's template rather than its own (the vllm backend)."""

    stop_token_ids: frozenset[int]

    def encode(self, prompt: Prompt) -> list[int]:
        """The rendered prompt's token ids."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """The answer text of ``token_ids`` (special tokens dropped, whitespace stripped)."""
        ...


class OpenAIGenerator(Generator):
    """Generates through the endpoint of ``settings.base_url``, one request per prompt.

    Without an ``encoder`` the chat completions endpoint is used: the server applies its own chat template and the
    prompt (instruction, then input after a blank line) is the single user message. With one (a vLLM server that
    safemix started), the completions endpoint gets the token ids safemix's template makes, so the model reads
    exactly what the hf backend feeds it, answers stop at the same tokens, and beam search runs through vLLM's
    ``use_beam_search``. Greedy decoding is sent as temperature 0 with the seed. :meth:`chat_reply` and
    :meth:`text_reply` answer one request each, for models used as tools.
    """

    def __init__(self, model: str, decoding: DecodingConfig, settings: OpenAIConfig,
                 encoder: PromptEncoder | None = None) -> None:
        import openai  # imported here: only this backend needs it

        if decoding.num_beams != 1 and encoder is None:
            raise InputError(f"decoding.num_beams: the openai backend cannot run beam search (got {decoding.num_beams}); "
                             "use --preset greedy or --num-beams 1, or the vllm backend")
        self.model = model
        self.decoding = decoding
        self.settings = settings
        self.encoder = encoder
        self._openai = openai
        self._client = openai.OpenAI(api_key=read_api_key(settings), base_url=settings.base_url,
                                     timeout=settings.timeout_s, max_retries=0)
        self._warned_finish: set[str] = set()

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """Yield each answer as its request finishes, keeping ``concurrency`` requests in flight."""
        pool = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="safemix-openai")
        try:
            pending: set[Future[Generation]] = {pool.submit(self._answer, prompt) for prompt in prompts}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield [future.result() for future in finished]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def _answer(self, prompt: Prompt) -> Generation:
        if self.encoder is not None:
            return self._answer_from_tokens(prompt, self.encoder)
        response = self._request_with_retries(prompt)
        choice = response.choices[0]
        if response.usage is None:
            raise RuntimeError(f"{self.settings.base_url}: the server returned no token usage for {prompt.id}")
        return make_generation(prompt, choice.message.content or "", self._finish_reason(choice.finish_reason),
                               response.usage.completion_tokens)

    def _answer_from_tokens(self, prompt: Prompt, encoder: PromptEncoder) -> Generation:
        """One completions request on the prompt's token ids; the answer is cut at the first stop token, as the hf
        backend cuts it, and decoded by the encoder."""
        fields = self._decoding_fields()
        extra = {**fields.pop("extra_body", {}), "return_token_ids": True,
                 "stop_token_ids": sorted(encoder.stop_token_ids)}
        if self.decoding.num_beams > 1:
            fields.update(n=self.decoding.num_beams, temperature=0.0)
            extra["use_beam_search"] = True
        response = self._with_retries(lambda: self._client.completions.create(
            model=self.model, prompt=encoder.encode(prompt), extra_body=extra, **fields), prompt.id)
        if not response.choices:
            raise RuntimeError(f"{self.settings.base_url}: the server returned no choice for {prompt.id}")
        choice = response.choices[0]
        token_ids = (choice.model_extra or {}).get("token_ids")
        if token_ids is None:
            raise RuntimeError(f"{self.settings.base_url}: the server returned no token ids for {prompt.id} "
                               "(a vLLM server reads return_token_ids)")
        stop = next((i for i, token in enumerate(token_ids) if token in encoder.stop_token_ids), None)
        kept = token_ids if stop is None else token_ids[:stop]
        stopped = stop is not None or choice.finish_reason == "stop"
        return make_generation(prompt, encoder.decode(kept), "stop" if stopped else "length", len(kept))

    def chat_reply(self, messages: Sequence[dict[str, str]]) -> str:
        """The reply to chat ``messages`` (``role`` and ``content`` each), retried like every request.

        Raises:
            EmptyReply: the server kept answering without a choice to read.
            openai.APIError: a request rejected, or still failing after ``max_retries`` retries.
        """
        def request() -> str:
            response = self._client.chat.completions.create(**self._request(list(messages)))
            if not response.choices:
                raise EmptyReply("the endpoint returned no choices")
            return response.choices[0].message.content or ""

        return self._with_retries(request, "chat request")

    def text_reply(self, text: str) -> str:
        """The continuation of ``text`` from the completions endpoint (no chat template), retried like
        :meth:`chat_reply`."""
        def request() -> str:
            response = self._client.completions.create(model=self.model, prompt=text, **self._decoding_fields())
            if not response.choices:
                raise EmptyReply("the endpoint returned no choices")
            continuation: str = response.choices[0].text
            return continuation

        return self._with_retries(request, "completion request")

    def failure(self, err: Exception) -> str | None:
        """Why a reply failed, in one line without secrets; None when ``err`` is not a failed or rejected request."""
        detail = str(err)[:_FAILURE_CHARS]
        if self._retryable(err):
            return f"request failed after {self.settings.max_retries} retries: {type(err).__name__}: {detail}"
        if isinstance(err, self._openai.APIStatusError):
            return f"request rejected (HTTP {err.status_code}): {detail}"
        return None

    def _request_with_retries(self, prompt: Prompt) -> Any:
        return self._with_retries(
            lambda: self._client.chat.completions.create(**self._request([{"role": "user", "content": record_prompt(prompt)}])),
            prompt.id)

    def _with_retries(self, call: Callable[[], T], what: str) -> T:
        return call_with_retries(call, retryable=self._retryable, max_retries=self.settings.max_retries,
                                 backoff_s=self.settings.backoff_s, max_backoff_s=self.settings.max_backoff_s,
                                 retry_after_s=_retry_after_s, what=what)

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, **self._decoding_fields()}

    def _decoding_fields(self) -> dict[str, Any]:
        decoding = self.decoding
        request: dict[str, Any] = {
            "max_tokens": decoding.max_new_tokens,
            "seed": decoding.seed,
            "temperature": decoding.temperature if decoding.do_sample else 0.0,
        }
        if decoding.do_sample:
            request["top_p"] = decoding.top_p
        extra: dict[str, float] = {}  # not in the OpenAI API, but vLLM and llama.cpp servers read them
        if decoding.do_sample and decoding.top_k:
            extra["top_k"] = decoding.top_k
        if decoding.repetition_penalty != 1.0:
            extra["repetition_penalty"] = decoding.repetition_penalty
        if extra:
            request["extra_body"] = extra
        return request

    def _retryable(self, err: Exception) -> bool:
        if isinstance(err, EmptyReply):
            return True
        if isinstance(err, self._openai.APIStatusError):
            return err.status_code in _RETRY_STATUSES or err.status_code >= 500
        return isinstance(err, (self._openai.APITimeoutError, self._openai.APIConnectionError))

    def _finish_reason(self, reason: str | None) -> FinishReason:
        if reason == "length":
            return "length"
        if reason not in ("stop", None) and reason not in self._warned_finish:
            self._warned_finish.add(reason)
            log.warning("the server ended an answer with finish_reason %r; recorded as 'stop'", reason)
        return "stop"


def _retry_after_s(err: Exception) -> float | None:
    """The delay a server asks for in ``Retry-After`` (seconds), if any; an HTTP date is ignored."""
    response = getattr(err, "response", None)
    retry_after = response.headers.get("retry-after") if response is not None else None
    try:
        return float(retry_after) if retry_after is not None else None
    except ValueError:
        return None

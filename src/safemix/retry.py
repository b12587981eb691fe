"""Retrying calls to a remote service with exponential backoff, shared by every API client in safemix."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def call_with_retries(
    call: Callable[[], T],
    *,
    retryable: Callable[[Exception], bool],
    max_retries: int,
    backoff_s: float,
    max_backoff_s: float = math.inf,
    retry_after_s: Callable[[Exception], float | None] = lambda err: None,
    what: str = "request",
) -> T:
    """Return ``call()``, retrying up to ``max_retries`` times on errors that ``retryable`` accepts.

    The n-th retry waits ``backoff_s * 2**n`` seconds, or what ``retry_after_s`` reads from the error (a
    server's ``Retry-After``), capped at ``max_backoff_s``. A non-retryable error, or the last retryable one,
    propagates unchanged.

    Args:
        call: the request to make.
        retryable: whether an error is worth another try (rate limits, 5xx, timeouts, dropped connections).
        max_retries: retries after the first try.
        backoff_s: the first delay.
        max_backoff_s: the longest delay.
        retry_after_s: a delay the error itself asks for, or None.
        what: what is being tried, for the log line of each retry (never include secrets).
    """
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Exception as err:
            if attempt == max_retries or not retryable(err):
                raise
            delay_s = min(retry_after_s(err) or backoff_s * 2**attempt, max_backoff_s)
            log.warning("%s: %s; retry %d/%d in %.1f s", what, _one_line(err), attempt + 1, max_retries, delay_s)
            time.sleep(delay_s)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _one_line(err: Exception) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")[:200]

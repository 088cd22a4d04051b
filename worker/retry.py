"""Retrying an infrastructure call with exponential backoff, up to a deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("taas.retry")


def with_backoff(call: Callable[[], T], *, retry_on: tuple[type[BaseException], ...],
                 timeout: float, what: str, first_delay: float = 0.2,
                 max_delay: float = 5.0) -> T:
    """Call until it succeeds; re-raise the last error once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        try:
            return call()
        except retry_on as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(error).__name__,
                        error, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)

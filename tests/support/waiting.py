"""Polling with a deadline: every test and benchmark waits for real parts the same way."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """The first truthy value of `predicate`, polled every `interval` s; TimeoutError naming
    `what` once `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

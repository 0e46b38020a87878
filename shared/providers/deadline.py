"""A total deadline around one provider call. The SDK timeout bounds each read only, and the
threads pool does not enforce Celery's time limits, so a trickling answer could hold a lease
forever: the call runs on a helper thread while the worker thread waits with a deadline."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, TypeVar

T = TypeVar("T")

_local = threading.local()


class DeadlineExceeded(Exception):
    """The call did not finish in time; it may still finish (and be billed) later."""


class _Caller:
    """One long-lived daemon thread per worker thread, which makes the calls (so SDK clients,
    cached per thread, are reused) while the worker thread waits with a deadline."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="genesis-call", daemon=True).start()

    def submit(self, call: Callable[[], T]) -> Future:
        future: Future = Future()
        self._work.put((call, future))
        return future

    def _serve(self) -> None:
        while True:
            call, future = self._work.get()
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)


def _caller() -> _Caller:
    caller = getattr(_local, "caller", None)
    if caller is None:
        caller = _local.caller = _Caller()
    return caller


def within(deadline_s: float, call: Callable[[], T], *, on_late: Callable[[T], None] | None = None) -> T:
    """`call()`'s result within `deadline_s`, else DeadlineExceeded; a result that arrives
    later is handed to `on_late` (from the helper thread)."""
    answer = _caller().submit(call)
    try:
        return answer.result(timeout=deadline_s)
    except FutureTimeout:
        _local.caller = None  # this one stays busy with the abandoned call; the next gets a fresh one
        if on_late is not None:
            answer.add_done_callback(lambda done: done.exception() is None and on_late(done.result()))
        raise DeadlineExceeded from None

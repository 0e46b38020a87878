"""A total deadline around one provider call. The SDK timeout bounds each read only, and the
threads pool does not enforce Celery's time limits, so a trickling answer could hold a lease
forever: the call runs on a helper thread while the worker thread waits with a deadline.

A call past its deadline is abandoned, not forgotten: its helper thread finishes it, hands its
outcome (the late answer, or the error) to `on_late`, closes its SDK clients (their
connections) and exits. So no helper thread outlives its call, and the caller can ledger a late
answer and hold the call's reservation until then (worker/paid_call.py)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, TypeVar

T = TypeVar("T")

_local = threading.local()
CALLER_NAME = "genesis-call"
ABANDONED_NAME = "genesis-call-late"  # a helper still finishing a call past its deadline
# The SDK's own read timeout is this many deadlines, so an answer somewhat later than the
# deadline still arrives (and is ledgered at its real usage) rather than being cut off unseen.
LATE_READ_FACTOR = 2.0
_STOP = object()


class DeadlineExceeded(Exception):
    """The call did not finish in time; it may still finish (and be billed) later."""


class _Caller:
    """One daemon thread per worker thread, which makes the calls (so SDK clients, cached per
    thread, are reused) while the worker thread waits with a deadline. Once abandoned it
    finishes its one call, cleans up and exits."""

    def __init__(self, on_exit: Callable[[], None]) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._serve, name=CALLER_NAME, daemon=True)
        self.thread.start()

    def submit(self, call: Callable[[], T]) -> Future:
        future: Future = Future()
        self._work.put((call, future))
        return future

    def abandon(self) -> None:
        self.thread.name = ABANDONED_NAME
        self._work.put(_STOP)

    def _serve(self) -> None:
        try:
            while (item := self._work.get()) is not _STOP:
                call, future = item
                try:
                    future.set_result(call())
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                    future.set_exception(exc)
        finally:
            self._on_exit()


def _caller(on_exit: Callable[[], None]) -> _Caller:
    caller = getattr(_local, "caller", None)
    if caller is None:
        caller = _local.caller = _Caller(on_exit)
    return caller


def within(deadline_s: float, call: Callable[[], T], *, on_late: Callable[[Future], None] | None = None,
           on_exit: Callable[[], None] = lambda: None) -> T:
    """`call()`'s result within `deadline_s`, else DeadlineExceeded; the abandoned call's
    future (result or exception) is handed to `on_late` when it ends, from the helper thread,
    which then runs `on_exit` (closing what it held) and ends."""
    caller = _caller(on_exit)
    answer = caller.submit(call)
    try:
        return answer.result(timeout=deadline_s)
    except FutureTimeout:
        _local.caller = None  # this one finishes the abandoned call and exits; the next call gets a fresh one
        if on_late is not None:
            answer.add_done_callback(on_late)
        caller.abandon()
        raise DeadlineExceeded from None


def helper_threads() -> dict[str, int]:
    """Helper threads alive in this process: serving a worker thread, and abandoned ones still
    finishing a late call (what `genesis_call_threads` reports, for tests and benches)."""
    names = [thread.name for thread in threading.enumerate()]
    return {"callers": names.count(CALLER_NAME), "late": names.count(ABANDONED_NAME)}

"""Counters of what the simulator served, for tests and capacity benchmarks to read."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict


class ServedStats:
    """Thread-safe counters; `snapshot()` is the JSON served at `GET /_sim/stats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests_total = 0
            self.by_status: Counter[int] = Counter()
            self.by_model: Counter[str] = Counter()
            self.by_api: Counter[str] = Counter()
            self.by_model_status: defaultdict[str, Counter[int]] = defaultdict(Counter)
            self.faults: Counter[str] = Counter()
            self.completions_ok = 0
            self.input_tokens = 0
            self.output_tokens = 0
            self.peak_in_flight = self.in_flight

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def finished(
        self,
        api: str,
        model: str,
        status: int,
        usage: tuple[int, int] | None = None,
        fault: str | None = None,
    ) -> None:
        """Record one answered request: `usage` (input, output tokens) only for a completion
        billed (served whole, or malformed or dropped on the way), `fault` naming an injected one ("500", "timeout", "malformed"...)."""
        with self._lock:
            self.in_flight -= 1
            self.requests_total += 1
            self.by_status[status] += 1
            self.by_model[model] += 1
            self.by_api[str(api)] += 1
            self.by_model_status[model][status] += 1
            if fault is not None:
                self.faults[fault] += 1
            if usage is not None:
                self.completions_ok += 1
                self.input_tokens += usage[0]
                self.output_tokens += usage[1]

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests_total": self.requests_total,
                "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
                "by_model": dict(self.by_model),
                "by_api": dict(self.by_api),
                "by_model_status": {
                    model: {str(status): n for status, n in sorted(counts.items())}
                    for model, counts in self.by_model_status.items()
                },
                "faults": dict(self.faults),
                "completions_ok": self.completions_ok,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
            }

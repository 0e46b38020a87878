"""Whether a simulated answer is greedy or sampled, and what a sampled one is drawn from.

Read from the request as each SDK sends it: `temperature` in all three wire formats; absent
means the provider's default (1.0 for OpenAI and Anthropic, 0.7 for Mistral), i.e. sampled. At
temperature 0 the answer is a pure function of (seed, model, prompt): every epoch and every
retry agrees. Above 0 each request is its own draw, keyed by the request's own seed (OpenAI
`seed`, Mistral `random_seed`: the same seed, the same answer) or else by a counter of sampled
requests (the simulator's --seed then fixes the sequence). SimulatorConfig.sampling (`producer
simulator --sampling`): `always` treats every request as sampled whatever its temperature,
`never` every request as greedy."""

from __future__ import annotations

import itertools
import threading

from simulator.wire import Api, ChatRequest

DEFAULT_TEMPERATURE = {Api.OPENAI: 1.0, Api.ANTHROPIC: 1.0, Api.MISTRAL: 0.7}


def temperature_of(request: ChatRequest) -> float:
    """The temperature the provider would decode at."""
    return DEFAULT_TEMPERATURE[request.api] if request.temperature is None else request.temperature


class Sampler:
    """The draw key of each request: None for greedy decoding, else one per sampled request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def reset(self) -> None:
        with self._lock:
            self._counter = itertools.count(1)

    def draw_key(self, request: ChatRequest, mode: str = "request") -> str | None:
        """`mode`: SimulatorConfig.sampling."""
        if mode == "never" or (mode == "request" and temperature_of(request) <= 0):
            return None
        if request.seed is not None:
            return f"seed:{request.seed}"
        with self._lock:
            return f"n:{next(self._counter)}"

"""Offline token estimates. tiktoken downloads its encodings at first use and fails offline,
so admission control (rate limits, budget reservations) uses a deliberately generous
character-based estimate; real usage from the API corrects it after the call."""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 3.0  # English averages ~4; 3 over-estimates, which is the safe side here
MESSAGE_OVERHEAD_TOKENS = 8


def estimate_tokens(text: str | None) -> int:
    return math.ceil(len(text or "") / CHARS_PER_TOKEN)


def estimate_prompt_tokens(prompt: str, system: str | None = None) -> int:
    """Input tokens of a chat request with an optional system message."""
    messages = 2 if system else 1
    return estimate_tokens(prompt) + estimate_tokens(system) + MESSAGE_OVERHEAD_TOKENS * messages

"""Offline tokenisation: a word/punctuation split stands in for the providers' tokenizers, so
usage counts are real, deterministic counts of what was sent and served without any download."""

from __future__ import annotations

import re

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, as chat formats add per message

GENERIC_SENTENCES = (
    "Thanks for the question.",
    "Here is a short, practical answer based on the information given.",
    "The key point is to state the goal clearly, check the facts that matter, and act on them in order.",
    "If anything is unclear, a follow-up with the missing details will let me be more specific.",
    "In most cases the simplest approach that meets the requirement is the right one to start with.",
    "Let me know if you would like a more detailed breakdown or an example.",
)


def count_tokens(text: str) -> int:
    return len(TOKEN_PATTERN.findall(text))


def count_prompt_tokens(texts: list[str]) -> int:
    """Tokens of a chat prompt: each message's (or system block's) text plus a fixed overhead."""
    return sum(count_tokens(text) + MESSAGE_OVERHEAD_TOKENS for text in texts)


def truncate_to_tokens(text: str, max_tokens: int) -> tuple[str, int, bool]:
    """(text cut after its max_tokens-th token, tokens kept, whether it was cut)."""
    matches = list(TOKEN_PATTERN.finditer(text))
    if len(matches) <= max_tokens:
        return text, len(matches), False
    if max_tokens <= 0:
        return "", 0, True
    return text[: matches[max_tokens - 1].end()], max_tokens, True


def generic_reply(draw: int) -> str:
    """A plausible answer for prompts outside the suite; `draw` picks a rotation deterministically."""
    start = draw % len(GENERIC_SENTENCES)
    return " ".join(GENERIC_SENTENCES[start:] + GENERIC_SENTENCES[:start])

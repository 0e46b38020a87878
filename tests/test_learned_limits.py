"""What one answer's rate-limit headers become for the limiter's learned hash (no services)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.learned_limits import learn_args
from shared.retry import read_quotas

# Anthropic's headers as docs.anthropic.com/en/api/rate-limits shows them: requests, input and
# output tokens apart, and `tokens` (the most restrictive of the token limits in force).
RESET = "reset: a minute from the moment the headers are read (see _args)"
ANTHROPIC = {
    "anthropic-ratelimit-requests-limit": "4000", "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": RESET,
    "anthropic-ratelimit-input-tokens-limit": "400000", "anthropic-ratelimit-input-tokens-remaining": "399000",
    "anthropic-ratelimit-input-tokens-reset": RESET,
    "anthropic-ratelimit-output-tokens-limit": "80000", "anthropic-ratelimit-output-tokens-remaining": "79000",
    "anthropic-ratelimit-output-tokens-reset": RESET,
}


def _args(headers: dict[str, str]) -> dict[str, object]:
    """What these headers teach, read as if they had just arrived: each reset a minute from now
    (a reset fixed at import would be in the past, and bogus, by the time a long suite gets here)."""
    reset = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    headers = {k: reset if v == RESET else v for k, v in headers.items()}
    names = ("rpm", "tpm", "rpm_src", "tpm_src", "input_tpm", "output_tpm", "refused", "silent", "ceiling_rpm")
    return dict(zip(names, learn_args(read_quotas(headers), refused=False, ceiling_rpm=None), strict=True))


def test_anthropics_input_and_output_limits_become_two_limits_not_one_token_rate() -> None:
    args = _args(ANTHROPIC)
    assert (args["input_tpm"], args["output_tpm"]) == (400_000, 80_000)
    assert (args["tpm"], args["tpm_src"]) == (-1, "")  # not min(input, output): the split buckets pace tokens
    assert (args["rpm"], args["rpm_src"]) == (4000, "anthropic-ratelimit-requests-limit")


def test_anthropics_tokens_header_is_still_read_as_the_token_rate() -> None:
    args = _args({**ANTHROPIC, "anthropic-ratelimit-tokens-limit": "80000",
                  "anthropic-ratelimit-tokens-remaining": "79000", "anthropic-ratelimit-tokens-reset": RESET})
    assert (args["tpm"], args["tpm_src"]) == (80_000, "anthropic-ratelimit-tokens-limit")
    assert (args["input_tpm"], args["output_tpm"]) == (400_000, 80_000)


def test_only_one_of_the_two_stated_is_learned_alone_and_openai_states_neither() -> None:
    only_input = {k: v for k, v in ANTHROPIC.items() if "output" not in k}
    assert (_args(only_input)["input_tpm"], _args(only_input)["output_tpm"]) == (400_000, -1)
    openai = _args({"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "200000"})
    assert (openai["tpm"], openai["input_tpm"], openai["output_tpm"]) == (200_000, -1, -1)


def test_a_bogus_output_limit_is_not_learned() -> None:
    args = _args({**ANTHROPIC, "anthropic-ratelimit-output-tokens-limit": "0"})
    assert (args["input_tpm"], args["output_tpm"]) == (400_000, -1)


def test_producer_limits_shows_the_input_and_output_limits_stated_capped_and_in_force() -> None:
    from producer.limits_cli import _row
    from shared.config.tables import RateLimit
    from shared.learned_limits import Learned
    from shared.limiter import BucketView

    learned = Learned(rpm=4000, tpm=None, rpm_source="anthropic-ratelimit-requests-limit", tpm_source="",
                      rpm_at_ms=None, tpm_at_ms=None, input_tpm=400_000, output_tpm=80_000, silent=False,
                      aimd_rpm=None)
    view = BucketView("anthropic", "claude-haiku-4-5", "", RateLimit(otpm=40_000), learned, (4000, 0, 400_000, 40_000),
                      0.0, 0.0)
    row = _row(view)
    assert (row["stated"]["input_tpm"], row["stated"]["output_tpm"]) == (400_000, 80_000)
    assert row["in_force"] == {"rpm": 4000, "tpm": None, "itpm": 400_000, "otpm": 40_000}
    assert (row["ceiling"]["itpm"], row["ceiling"]["otpm"]) == (None, 40_000)
    assert any("ceiling otpm = 40000 is below the 80000" in note for note in row["notes"])

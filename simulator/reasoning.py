"""Today's reasoning models, as the providers behave (so the project's handling is tested end to
end with the real SDKs):

- OpenAI's reasoning models (ids o1*, o3*, o4*, gpt-5*) refuse `max_tokens` and any temperature
  but the default (1) with OpenAI's own 400 bodies (`param`, `code`), and spend part of their
  allowance (`max_completion_tokens`) on reasoning, reported in
  `usage.completion_tokens_details.reasoning_tokens` (already inside `completion_tokens`);
  when reasoning spends the whole allowance the answer is empty, finish_reason "length".
- Anthropic's extended thinking (`thinking = {type: enabled, budget_tokens: N}`): N >= 1024 and
  < max_tokens, no temperature but 1; a thinking block comes before the text, its tokens inside
  `output_tokens`.

How much a model reasons: `reasoning_tokens` of the simulator's config per request at effort
"low" (none at "none"/"minimal", x2 at "medium", OpenAI's default, x4 at "high"); Anthropic
thinks twice that, within its budget."""

from __future__ import annotations

from fnmatch import fnmatchcase

from simulator.wire import Api, ChatRequest

REASONING_MODELS = ("o1*", "o3*", "o4*", "gpt-5*")
EFFORT_SCALE = {"none": 0, "minimal": 0, "low": 1, "medium": 2, "high": 4}
DEFAULT_EFFORT = "medium"
THINKING_FLOOR = 1024


def is_reasoning_model(api: Api, model: str) -> bool:
    return api is Api.OPENAI and any(fnmatchcase(model, pattern) for pattern in REASONING_MODELS)


def refusal(request: ChatRequest) -> tuple[str, dict] | None:
    """(message, extra error fields) of the 400 a provider gives these settings, or None."""
    settings = request.settings
    if is_reasoning_model(request.api, request.model):
        if "max_tokens" in settings:
            return ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.",
                    {"param": "max_tokens", "code": "unsupported_parameter"})
        temperature = settings.get("temperature")
        if temperature is not None and temperature != 1:
            return (f"Unsupported value: 'temperature' does not support {temperature} with this model. "
                    "Only the default (1) value is supported.",
                    {"param": "temperature", "code": "unsupported_value"})
    if request.api is Api.ANTHROPIC and (budget := thinking_budget(request)) is not None:
        if budget < THINKING_FLOOR:
            return f"thinking.enabled.budget_tokens: Input should be greater than or equal to {THINKING_FLOOR}", {}
        if request.max_tokens is None or budget >= request.max_tokens:
            return "`max_tokens` must be greater than `thinking.budget_tokens`.", {}
        if settings.get("temperature") not in (None, 1):
            return "`temperature` may only be set to 1 when thinking is enabled.", {}
    return None


def thinking_budget(request: ChatRequest) -> int | None:
    thinking = request.settings.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        return budget if isinstance(budget, int) else 0
    return None


def reasoning_spend(request: ChatRequest, per_request: int, allowance: int) -> int:
    """Tokens of the allowance this request spends reasoning or thinking (0: it does not reason)."""
    if is_reasoning_model(request.api, request.model):
        effort = request.settings.get("reasoning_effort") or DEFAULT_EFFORT
        return min(per_request * EFFORT_SCALE.get(effort, 2), allowance)
    if request.api is Api.ANTHROPIC and (budget := thinking_budget(request)) is not None:
        return min(per_request * 2, budget, allowance)
    return 0


def thinking_text(tokens: int) -> str:
    """A thinking block as long as `tokens` by the project's own character estimate (3 a token)."""
    words = "Considering what the task asks and checking the answer. "
    return (words * (tokens * 3 // len(words) + 1))[: tokens * 3]

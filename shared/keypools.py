"""Key pools (design §14): which of a backend's key variables share one organisation's limits.

A backend (or `[keys.<provider>]`) names one key variable, or a list; `pools = {NAME = [vars]}`
groups variables whose keys belong to one organisation or workspace (a provider limits the
organisation, not the key). A variable in no pool is a pool of its own, named after it. Each
pool is its own set of limiter buckets with its own learned limits (shared/limiter.py); a call
goes to the pool with the most headroom, and to one of its keys not refused this run (401: for every model, 403: for that model).
A pool's name is a function of its variables alone: the `pools` name grouping them, else the
variable's own name, however many variables the backend lists, so a key is metered (and learns its
limits) in one set of buckets whichever backends name it, and two backends' keys never share one.

Only variable NAMES live here and travel (in permits, the ledger, job rows): never a key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeyPool:
    name: str  # the limiter's bucket suffix: the `pools` name, else the variable's
    variables: tuple[str, ...]


def pools_of(api_key_env: str | list[str], pools: dict[str, list[str]]) -> tuple[KeyPool, ...]:
    """The pools of a (validated) key configuration, in the order its variables are listed."""
    variables = [api_key_env] if isinstance(api_key_env, str) else list(api_key_env)
    named = {variable: name for name, members in pools.items() for variable in members}
    out: dict[str, list[str]] = {}
    for variable in variables:
        out.setdefault(named.get(variable, variable), []).append(variable)
    return tuple(KeyPool(name, tuple(members)) for name, members in out.items())

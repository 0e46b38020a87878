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


def pools_disagree(pools_by_user: dict[str, tuple[KeyPool, ...]]) -> str | None:
    """Why the pools of several users of keys (backends, `[keys.<provider>]`) contradict each other,
    or None: a variable in different pools on two of them (one key metered twice, or two
    organisations' keys in one bucket), or a pool named after a key variable (its bucket would be
    that key's own)."""
    pool_of: dict[str, tuple[str, str]] = {}
    for user, pools in pools_by_user.items():
        for pool in pools:
            for variable in pool.variables:
                other = pool_of.setdefault(variable, (pool.name, user))
                if other[0] != pool.name:
                    return (f"key variable {variable!r} is in pool {other[0]!r} for {other[1]} but {pool.name!r} "
                            f"for {user}: a key's limits are one organisation's, so group it the same everywhere")
    for user, pools in pools_by_user.items():
        for pool in pools:
            if pool.name in pool_of and pool.variables != (pool.name,):
                return (f"pool {pool.name!r} of {user} is named after a key variable: name a pool after its "
                        "organisation or workspace")
    return None

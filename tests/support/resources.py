"""What a test uses besides the CPU and tmp files, one pytest marker each (registered in
pyproject.toml), and how a fixture declares it: `@uses("redis")` under its `@pytest.fixture`.
tests/support/tiers.py marks every test from these."""

from __future__ import annotations

import pytest

RESOURCES = ("redis", "postgres", "simulator", "workers", "processes", "browser", "netns", "sockets")


def uses(*markers: str):
    """Declare what a fixture uses (`@pytest.fixture` above, `@uses("redis")` below): every test
    that uses the fixture, even through other fixtures, gets these markers."""
    unknown = set(markers) - set(RESOURCES)
    assert not unknown, f"not a resource marker: {sorted(unknown)}"

    def declare(fixture_function):
        fixture_function.genesis_uses = markers
        return fixture_function

    return declare


def used_by(item: pytest.Item) -> set[str]:
    """The resource markers of `item`: its own, its fixtures' (`name2fixturedefs` is pytest's
    record of every fixture the test reaches), and `postgres` for a PostgreSQL parameter."""
    found = {name for name in RESOURCES if item.get_closest_marker(name)}
    fixture_defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for name in getattr(item, "fixturenames", ()):
        for fixture_def in fixture_defs.get(name, ()):
            found.update(getattr(fixture_def.func, "genesis_uses", ()))
    params = getattr(getattr(item, "callspec", None), "params", {})
    if params.get("database_url") == "postgres":
        found.add("postgres")
    return found

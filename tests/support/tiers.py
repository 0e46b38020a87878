"""The test tiers (a pytest plugin, loaded by tests/conftest.py).

Every test is marked by what it uses, from its fixtures: a fixture that starts or needs a real
part says so with `@uses(...)` under its `@pytest.fixture`, and a test using it, even through
other fixtures, gets those markers. A test parametrized with `database_url="postgres"` gets
`postgres`. A test that starts a process or opens a socket without such a fixture carries the
marker itself (`processes`, `sockets`, `browser`, ...). Any of these markers also adds
`integration`; a test with none of them is `unit`. SQLite files in tmp dirs are allowed in
the unit tier: no server, no process.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.resources import RESOURCES, used_by


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        resources = used_by(item)
        for name in resources:
            item.add_marker(name)
        if resources or item.get_closest_marker("integration"):
            item.add_marker("integration")
        else:
            item.add_marker("unit")


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> str:
    """One line of how many selected tests each marker has (`-m unit` shows the unit tier)."""
    counts = Counter(name for item in items for name in ("unit", "integration", *RESOURCES)
                     if item.get_closest_marker(name))
    return "tiers: " + ", ".join(f"{name} {counts[name]}" for name in ("unit", "integration", *RESOURCES)
                                 if counts[name])

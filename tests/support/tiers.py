"""The test tiers (a pytest plugin, loaded by tests/conftest.py).

Every test is marked by what it uses, from its fixtures: a fixture that starts or needs a real
part says so with `@uses(...)` under its `@pytest.fixture`, and a test using it, even through
other fixtures, gets those markers. A test parametrized with `database_url="postgres"` gets
`postgres`. A test that starts a process or opens a socket without such a fixture carries the
marker itself (`processes`, `sockets`, `browser`, ...). Any of these markers also adds
`integration`; a test with none of them is `unit`. SQLite files in tmp dirs are allowed in
the unit tier: no server, no process.

The unit tier is guarded: while a `unit` test sets up and runs, starting a process or
connecting or binding a socket fails it, even when the code under test swallowed the error, so
a test that lacks its marker fails loudly, in the full run as well as under `-m unit`.
"""

from __future__ import annotations

import _posixsubprocess
import os
import socket
import subprocess
import threading
from collections import Counter

import pytest

from tests.support.resources import RESOURCES, used_by


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        resources = used_by(item)
        for name in resources:
            item.add_marker(name)
        if resources or item.get_closest_marker("integration") or item.get_closest_marker("statistics"):
            item.add_marker("integration")
        else:
            item.add_marker("unit")


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> str:
    """One line of how many selected tests each marker has (`-m unit` shows the unit tier)."""
    counts = Counter(name for item in items for name in ("unit", "integration", *RESOURCES)
                     if item.get_closest_marker(name))
    return "tiers: " + ", ".join(f"{name} {counts[name]}" for name in ("unit", "integration", *RESOURCES)
                                 if counts[name])


class UnitTierViolation(RuntimeError):
    """A `unit` test started a process or opened a socket."""


def _refuse(patch: pytest.MonkeyPatch, seen: list[str]) -> None:
    """Patches every way to start a process or use a socket. Threads alive before the phase
    (a server or a pool an earlier integration test left running) pass through: only the test's
    own thread and the threads it starts are refused."""
    earlier = {thread.ident for thread in threading.enumerate()} - {threading.get_ident()}

    def refuse(owner, name: str, what: str) -> None:
        original = getattr(owner, name)

        def refused(*args, **kwargs):
            if threading.get_ident() in earlier:
                return original(*args, **kwargs)
            seen.append(what)
            raise UnitTierViolation(f"a unit test may not {what} (tests/support/tiers.py)")

        patch.setattr(owner, name, refused)

    refuse(subprocess.Popen, "_execute_child", "start a process (subprocess)")
    refuse(_posixsubprocess, "fork_exec", "start a process (multiprocessing)")
    for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            refuse(os, name, f"start a process (os.{name})")
    for name in ("connect", "connect_ex", "bind"):
        refuse(socket.socket, name, f"open a socket (socket.{name})")


def _guarded(item: pytest.Item):
    """Runs one phase of `item`; a unit test's phase fails if it tried to start a process or
    open a socket, whether or not the code it called let the error through."""
    if item.get_closest_marker("unit") is None:
        return (yield)
    seen: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        _refuse(patch, seen)
        try:
            result = yield
        except Exception:
            if not seen:
                raise
            result = None
    if seen:
        pytest.fail(f"a unit test tried to {'; '.join(dict.fromkeys(seen))}: give the fixture that does it "
                    f"@uses(...) (tests/support/resources.py) or mark the test with one of {', '.join(RESOURCES)}",
                    pytrace=False)
    return result


# Setup and call only: a teardown may finalize a module's server that an earlier test started.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    return (yield from _guarded(item))

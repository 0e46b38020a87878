"""The tiers plugin (tests/support/tiers.py), run by pytester on test files written here: each
test gets the markers of the fixtures it reaches, the rest are `unit`, and a unit test that
starts a process or opens a socket fails, even when the code it called swallowed the error
or a thread it started did it; threads that were running before it are not its doing."""

from __future__ import annotations

import pytest

CONFTEST = '''
import pytest

from tests.support.resources import uses

pytest_plugins = ["tests.support.tiers"]


@pytest.fixture
@uses("redis")
def redis_url():
    return "redis://nowhere"


@pytest.fixture
def genesis(redis_url):  # no @uses of its own: it inherits redis
    return {"GENESIS_REDIS_URL": redis_url}


@pytest.fixture(params=["sqlite"])
def database_url(request):
    return request.param
'''

CLASSIFIED = '''
import pytest


def test_plain():
    pass


def test_through_another_fixture(genesis):
    pass


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_on_both_databases(database_url):
    pass


@pytest.mark.processes
def test_marked_by_hand():
    pass
'''

VIOLATIONS = '''
import multiprocessing
import os
import socket
import subprocess
import threading


def test_starts_a_process():
    subprocess.run(["true"])


def test_swallows_a_refused_connection():
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)
    except Exception:
        pass  # as a client library would, turning it into "server away"


def test_forks():
    if os.fork() == 0:
        os._exit(0)


def test_starts_a_multiprocessing_child():
    multiprocessing.get_context("spawn").Process(target=print).start()


def test_binds_a_port():
    socket.socket().bind(("127.0.0.1", 0))


def test_starts_a_thread_that_binds_a_port():
    thread = threading.Thread(target=lambda: socket.socket().bind(("127.0.0.1", 0)))
    thread.start()
    thread.join()


def test_computes():
    assert sum(range(4)) == 6
'''


@pytest.fixture
def tiers(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    return pytester


def selected(tiers: pytest.Pytester, expression: str) -> set[str]:
    result = tiers.runpytest("--collect-only", "-q", "-m", expression)
    return {line.split("::", 1)[1] for line in result.outlines if "::" in line}


def test_tests_are_marked_by_the_fixtures_they_reach_and_the_rest_are_unit(tiers):
    tiers.makepyfile(test_classified=CLASSIFIED)
    assert selected(tiers, "unit") == {"test_plain", "test_on_both_databases[sqlite]"}
    assert selected(tiers, "redis") == {"test_through_another_fixture"}
    assert selected(tiers, "postgres") == {"test_on_both_databases[postgres]"}
    assert selected(tiers, "integration") == {
        "test_through_another_fixture", "test_on_both_databases[postgres]", "test_marked_by_hand"}


def test_a_unit_test_that_starts_a_process_or_opens_a_socket_fails_and_says_why(tiers):
    tiers.makepyfile(test_violations=VIOLATIONS)
    result = tiers.runpytest("-m", "unit", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=6)
    for name, what in (("test_starts_a_process", "start a process (subprocess)"),
                       ("test_swallows_a_refused_connection", "open a socket (socket.connect)"),
                       ("test_forks", "start a process (os.fork)"),
                       ("test_starts_a_multiprocessing_child", "start a process (multiprocessing)"),
                       ("test_binds_a_port", "open a socket (socket.bind)"),
                       ("test_starts_a_thread_that_binds_a_port", "open a socket (socket.bind)")):
        result.stdout.fnmatch_lines([f"*_ {name} _*", f"a unit test tried to {what}: *"])


EARLIER_THREAD = '''
import socket
import threading

go, done, bound = threading.Event(), threading.Event(), []


def serve_later():
    go.wait(10)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        bound.append(server.getsockname()[1])
    done.set()


threading.Thread(target=serve_later, daemon=True).start()  # as an earlier test's server would be


def test_while_an_earlier_thread_binds_a_port():
    go.set()
    assert done.wait(10) and bound
'''


@pytest.mark.sockets  # the thread below really binds a port
def test_threads_alive_before_a_unit_test_are_not_its_doing(tiers):
    tiers.makepyfile(test_earlier_thread=EARLIER_THREAD)
    tiers.runpytest("-m", "unit", "-p", "no:cacheprovider").assert_outcomes(passed=1)

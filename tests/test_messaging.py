"""The one messaging module: imports form no cycle and nothing in worker/ imports producer/;
every job goes out through Celery's public API (before_task_publish sees each one); a backend
with its own endpoint has its own queue, consumed by a worker started without -Q."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "producer", "worker", "simulator")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports, at module level or inside a
    function (a lazy import is still a dependency). `from pkg import submodule` is an edge to the
    submodule; a module's own ancestor packages (which Python initialises first) are no edge."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name and not name.startswith(f"{t}.")}
        graph[name] = edges
    return graph


def runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (imported for type checkers only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_project_imports_form_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "shared.messaging" in graph["worker.recovery"]  # the walk sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_in_worker_or_shared_imports_producer():
    graph = import_graph()
    offenders = {m: sorted(e for e in edges if e.split(".")[0] == "producer")
                 for m, edges in graph.items() if m.split(".")[0] in ("worker", "shared")}
    assert {m: e for m, e in offenders.items() if e} == {}


def test_shared_imports_nothing_from_worker():
    graph = import_graph()
    assert {m: sorted(e) for m, edges in graph.items() if m.startswith("shared")
            if (e := {x for x in edges if x.startswith("worker")})} == {}


def test_every_job_is_published_through_celery_with_its_signals(genesis, redis_url):
    """before_task_publish and after_task_publish fire once per job, with the job id as the only
    argument, and the message lands on the job's queue."""
    from celery import signals

    from producer import submit
    from shared.config import get_settings
    from shared.messaging import RUN_JOB

    before, after = [], []

    def on_before(sender=None, body=None, routing_key=None, **_):
        before.append((sender, body[0][0], routing_key))

    def on_after(sender=None, **_):
        after.append(sender)

    signals.before_task_publish.connect(on_before, weak=False)
    signals.after_task_publish.connect(on_after, weak=False)
    try:
        settings = get_settings()
        selection = submit.select_work(settings, agents=["qa"], all_agents=False,
                                       backends=["openai", "anthropic", "mistral-base"], suite=None, limit=4)
        run_id, queued = submit.record_run(settings, selection)
        submit.enqueue(run_id, queued)
    finally:
        signals.before_task_publish.disconnect(on_before)
        signals.after_task_publish.disconnect(on_after)
    assert sorted(before) == sorted((RUN_JOB, job_id, provider) for job_id, provider, _ in queued)
    assert after == [RUN_JOB] * len(queued) == [RUN_JOB] * 12
    client = redis.Redis.from_url(redis_url)
    assert {q: client.llen(q) for q in ("openai", "anthropic", "mistral")} == {"openai": 4, "anthropic": 4, "mistral": 4}


ENDPOINT_TOML = """
[backends.local]
provider = "openai"
model = "local-model"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "LOCAL_KEY"

[backends.hosted]
provider = "openai"
model = "gpt-4o-mini"
"""


def test_a_backend_with_its_own_endpoint_has_its_own_queue(monkeypatch, tmp_path, redis_url):
    from shared.messaging import all_queues, celery_config, job_queue, job_queues, queue_provider
    from shared.config import get_settings
    from tests.support.env import use_config

    use_config(monkeypatch, tmp_path, ENDPOINT_TOML, redis_url)
    settings = get_settings()
    assert job_queue(settings, "openai", "local") == "openai@local"
    assert job_queue(settings, "openai", "hosted") == "openai"
    assert job_queue(settings, "openai", "gone-from-the-config") == "openai"
    assert job_queues(settings) == ("openai", "anthropic", "mistral", "openai@local")
    assert all_queues(settings)[-2:] == ("reports", "batches")
    assert {q.name for q in celery_config(settings)["task_queues"]} == set(all_queues(settings))
    assert queue_provider("openai@local") == "openai" and queue_provider("reports") is None


@pytest.mark.parametrize("table, message", [
    ('[backends.x]\nprovider = "openai"\nmodel = "m"\nbase_url = "gpu-box:8000"', "base_url must start with http"),
    ('[backends.x]\nprovider = "openai"\nmodel = "m"\napi_key_env = "sk-123 secret"', "api_key_env must name"),
    ('[backends.x]\nprovider = "openai"\nmodel = "m"\nmode = "later"', "backends.x.mode"),
    ('[backends.openai]\nprovider = "openai"\nmodel = "m"\nbase_url = "http://h/v1"', "not a provider's"),
])
def test_bad_endpoint_keys_are_refused_by_name(monkeypatch, tmp_path, redis_url, table, message):
    from shared.config import ConfigError, load_settings
    from tests.support.env import use_config

    use_config(monkeypatch, tmp_path, table, redis_url)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_mode_defaults_to_realtime_and_accepts_batch(monkeypatch, tmp_path, redis_url):
    from shared.config import load_settings
    from tests.support.env import use_config

    use_config(monkeypatch, tmp_path, ENDPOINT_TOML + '\n[backends.b]\nprovider = "mistral"\nmodel = "m"\nmode = "batch"\n',
               redis_url)
    settings = load_settings()
    assert settings.backends["local"].mode == "realtime" and settings.backends["b"].mode == "batch"


def test_recovery_and_the_halt_control_are_bootsteps_of_the_app():
    from worker.app import app
    from worker.halt import HaltControlStep
    from worker.recovery import RecoveryStep

    assert RecoveryStep in app.steps["worker"] and HaltControlStep in app.steps["consumer"]


def test_the_recovery_threads_stop(monkeypatch, tmp_path, redis_client):
    """What RecoveryStep.stop does at worker shutdown: every loop ends and is joined."""
    import time

    from shared.config import load_settings
    from tests.support.env import SCRATCH_REDIS_URL, use_config
    from worker.recovery import Recovery

    use_config(monkeypatch, tmp_path, "", SCRATCH_REDIS_URL)
    recovery = Recovery("stop-test@host", load_settings())
    recovery.start()
    threads = list(recovery.threads)
    assert [t.name for t in threads] == ["genesis-heartbeat", "genesis-sweep", "genesis-journal"]
    assert all(t.is_alive() for t in threads)
    started = time.monotonic()
    recovery.stop()
    assert not any(t.is_alive() for t in threads) and time.monotonic() - started < 5
    assert redis_client.keys("*stop-test@host*")  # it did beat while it ran

"""docker-compose.yml: accepted by Debian's docker-compose 1.29 and by the Compose
Specification (its JSON schema and the compose-spec parser), keeps the deployment contract,
and every command in it also works outside Docker (Docker cannot run here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.env import ROOT
from tests.support.http_server import free_ports, http_status
from tests.support.resources import uses
from tests.support.waiting import wait_for

COMPOSE_FILE = ROOT / "docker-compose.yml"
DEBIAN_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
REDIS_PASSWORD = "redis-s3cret-pw"
DOTENV = {"POSTGRES_PASSWORD": "pw", "REDIS_PASSWORD": REDIS_PASSWORD, "FLOWER_BASIC_AUTH": "admin:secret"}
OUR_IMAGE = "${GENESIS_IMAGE:-genesis-bench:latest}"
_VARIABLE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: dict[str, str]):
    """The Compose Specification's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match.group(1):
            return "$"
        expr = match.group(2) if match.group(2) is not None else match.group(3)
        name, op, arg = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?(.*)", expr, re.S).groups()
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else current
        if op in (":?", "?"):
            if unset:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _VARIABLE.sub(one, value)


def compose_model(env: dict[str, str] = DOTENV) -> dict:
    """The file as Compose reads it: YAML with merge keys, then interpolated."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate(raw, env)


@pytest.mark.processes
def test_docker_compose_1_29_accepts_the_file():
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    ok = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"], env={**env, **DOTENV},
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    resolved = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "--profile", "sim", "config"],
                              env={**env, **DOTENV}, capture_output=True, text=True, timeout=60)
    assert resolved.returncode == 0, resolved.stderr
    assert "simulator" in yaml.safe_load(resolved.stdout)["services"]
    for required in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        without = {k: v for k, v in DOTENV.items() if k != required}
        missing = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"], env={**env, **without},
                                 capture_output=True, text=True, timeout=60)
        assert missing.returncode != 0 and f"set {required} in .env" in missing.stderr


def test_the_compose_specification_accepts_the_file():
    from compose_spec import PyCompose

    model = compose_model()
    parsed = PyCompose.from_yaml(yaml.safe_dump(model))  # raises on anything the spec rejects
    assert set(parsed.service_names()) == set(model["services"])
    if not DEBIAN_SCHEMA.is_file():
        pytest.skip(f"the Compose Specification JSON schema ({DEBIAN_SCHEMA}) comes with Debian's docker-compose")
    import jsonschema

    schema = json.loads(DEBIAN_SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft201909Validator(schema).iter_errors(model)]
    assert errors == []
    broken = {**model, "services": {**model["services"], "worker": {**model["services"]["worker"], "scale_me": 1}}}
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))  # the check can fail


def test_the_deployment_contract():
    services = compose_model()["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis_cmd[redis_cmd.index("--requirepass") + 1] == REDIS_PASSWORD
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == REDIS_PASSWORD  # the healthcheck's redis-cli
    redis_urls = {name: (service.get("environment") or {}).get("GENESIS_REDIS_URL") for name, service in services.items()
                  if service.get("image") == "genesis-bench:latest"}
    assert set(redis_urls.values()) == {f"redis://:{REDIS_PASSWORD}@redis:6379/0"}, redis_urls  # every one, flower's too
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"] and ":" in services[name]["volumes"][0]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    for name in ("worker", "flower", "metrics", "producer"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert int(worker["stop_grace_period"].rstrip("s")) > 2 * 60  # two calls of call_timeout_s
    assert "journal:/app/var/journal" in worker["volumes"]  # the journal's durable copy outlives the container
    assert all(port.startswith("127.0.0.1:") for name in ("flower", "metrics") for port in services[name]["ports"])
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == DOTENV["FLOWER_BASIC_AUTH"]
    assert services["simulator"]["profiles"] == ["sim"]
    for name, service in services.items():
        env = service.get("environment") or {}
        for key in [k for k in env if k.endswith(("_API_KEY", "_BASE_URL"))]:
            assert env[key] is None, f"{name}: {key} has a default ({env[key]!r}): keys and endpoints only when set"
        if service.get("image") == "genesis-bench:latest":
            mounts = service["volumes"]
            assert {"./config:/app/config:ro", "./models:/app/models:ro", "reports:/app/reports"} <= set(mounts)
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        compose_model({})
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        compose_model({k: v for k, v in DOTENV.items() if k != "REDIS_PASSWORD"})


@pytest.mark.processes
def test_dockerfile_and_dockerignore_agree():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert source.rstrip("/") in allowed, f"Dockerfile copies {source}, which .dockerignore leaves out"
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert dockerfile.index("COPY pyproject.toml") < dockerfile.index("COPY shared")  # dependencies cached first
    out = subprocess.run([sys.executable, str(ROOT / "scripts/requirements-from-pyproject.py"),
                          str(ROOT / "pyproject.toml"), "monitor", "postgres"], capture_output=True, text=True)
    assert out.returncode == 0 and {"flower", "psycopg[binary]"} <= {re.split(r"[<>=]", r)[0] for r in out.stdout.split()}


# --- every command, outside Docker ------------------------------------------------------------


def with_option(command: list[str], option: str, value: str) -> list[str]:
    """Replace an option's value (`--port 8900` or `--port=5555`) for a local run."""
    out = list(command)
    for i, arg in enumerate(out):
        if arg == option:
            out[i + 1] = value
        elif arg.startswith(option + "="):
            out[i] = f"{option}={value}"
    return out


class Service:
    """A compose command run here, in the venv, against local Redis and SQLite."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        venv_bin = str(Path(sys.executable).parent)
        self.env = {**os.environ, **env, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
        self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.log = log

    def run(self, command: list[str] | str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=ROOT, env=self.env, shell=isinstance(command, str), capture_output=True,
                              text=True, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


@pytest.fixture
@uses("processes")
def local(tmp_path, redis_url):
    """The compose services' environment with local addresses in place of container names."""
    env = {
        "GENESIS_DATABASE_URL": f"sqlite:///{tmp_path / 'genesis.db'}",
        "GENESIS_REDIS_URL": redis_url,
        "GENESIS_REPORTS_DIR": str(tmp_path / "reports"),
        "GENESIS_CONFIG": str(ROOT / "config" / "genesis.toml"),
    }
    started: list[Service] = []

    def start(command: list[str], extra: dict[str, str] | None = None, name: str = "svc") -> Service:
        service = Service(command, {**env, **(extra or {})}, tmp_path / f"{name}.log")
        started.append(service)
        return service

    yield start, env
    for service in started:
        service.stop()


def test_every_compose_command_works_outside_docker(local, tmp_path):
    start, env = local
    redis_port, sim_port, flower_port, metrics_port = free_ports(4)
    services = compose_model()["services"]

    migrate = subprocess.run(services["migrate"]["command"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert migrate.returncode == 0 and "Running upgrade" in migrate.stderr, migrate.stderr

    producer = services["producer"]
    help_run = subprocess.run([*producer["entrypoint"], *producer["command"]], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert help_run.returncode == 0 and "submit" in help_run.stdout

    redis_srv = start([*services["redis"]["command"], "--port", str(redis_port), "--bind", "127.0.0.1",
                       "--dir", str(tmp_path), "--save", ""], name="redis")
    cli = ["redis-cli", "-p", str(redis_port)]
    authed = {**redis_srv.env, **services["redis"]["environment"]}
    wait_for(lambda: "NOAUTH" in redis_srv.run([*cli, "ping"]).stdout, timeout=10, what="redis-server")
    redis_health = services["redis"]["healthcheck"]["test"][1].replace("redis-cli", " ".join(cli))
    assert subprocess.run(["sh", "-c", redis_health], env=authed).returncode == 0  # with the password
    assert subprocess.run(["sh", "-c", f"{' '.join(cli)} ping | grep -q PONG"], env=redis_srv.env).returncode != 0
    appendonly = subprocess.run([*cli, "config", "get", "appendonly"], env=authed, capture_output=True, text=True)
    assert appendonly.stdout.split() == ["appendonly", "yes"]
    # Every service from here on reaches Redis by the compose file's URL, password and all.
    redis_url = services["worker"]["environment"]["GENESIS_REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{redis_port}")

    pg_health = services["postgres"]["healthcheck"]["test"][1:]
    if shutil.which(pg_health[0]):
        assert subprocess.run([*pg_health, "-h", "127.0.0.1"], capture_output=True).returncode == 0

    start(with_option(services["simulator"]["command"], "--port", str(sim_port)), name="simulator")
    assert wait_for(lambda: http_status(f"http://127.0.0.1:{sim_port}/v1/models") > 0, timeout=30, what="simulator")

    worker = start(services["worker"]["command"], {"GENESIS_REDIS_URL": redis_url}, name="worker")
    health = services["worker"]["healthcheck"]["test"][1]
    wait_for(lambda: worker.run(health).returncode == 0, timeout=60, interval=1, what="worker healthcheck")

    start(with_option(services["flower"]["command"], "--port", str(flower_port)),
          {"FLOWER_BASIC_AUTH": services["flower"]["environment"]["FLOWER_BASIC_AUTH"], "GENESIS_REDIS_URL": redis_url},
          name="flower")
    metrics_cmd = with_option(with_option(services["metrics"]["command"], "--port", str(metrics_port)), "--host", "127.0.0.1")
    start(metrics_cmd, {"GENESIS_REDIS_URL": redis_url}, name="metrics")
    flower_url = f"http://127.0.0.1:{flower_port}/"
    wait_for(lambda: http_status(flower_url) == 401, timeout=60, interval=0.5, what="Flower to refuse without auth")
    assert http_status(flower_url, ("admin", "secret")) == 200
    assert http_status(flower_url, ("admin", "wrong")) == 401
    flower_metrics = f"http://127.0.0.1:{flower_port}/metrics"  # Flower leaves it open; worker/flower.py does not
    assert http_status(flower_metrics) == 401 and http_status(flower_metrics, ("admin", "wrong")) == 401
    assert http_status(flower_metrics, ("admin", "secret")) == 200
    assert http_status(f"http://127.0.0.1:{flower_port}/healthcheck") == 200
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for(lambda: http_status(metrics_url) == 200, timeout=30, what="the metrics endpoint")
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        assert b"genesis_budget_halted 0.0" in response.read()

    worker.stop()
    assert worker.run(health, timeout=60).returncode != 0  # the healthcheck can fail
    for log in tmp_path.glob("*.log"):  # Celery, Flower and the project print Redis' URL masked
        assert REDIS_PASSWORD not in log.read_text(errors="replace"), log.name
    assert ":**@127.0.0.1" in (tmp_path / "flower.log").read_text() + (tmp_path / "worker.log").read_text()

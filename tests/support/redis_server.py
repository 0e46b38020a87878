"""The Redis server of the tests: answering, or started on the port its URL names."""

from __future__ import annotations

import shutil
import subprocess

import redis
from redis.connection import parse_url

from tests.support.env import INTEGRATION_REDIS_URL
from tests.support.waiting import wait_for


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis(url: str = INTEGRATION_REDIS_URL) -> None:
    """Start a local redis-server on `url`'s port when nothing answers there (CI machines
    start one already)."""
    if redis_answers(url):
        return
    if not shutil.which("redis-server"):
        raise RuntimeError(f"Redis is not answering at {url} and redis-server is not installed")
    port = parse_url(url).get("port", 6379)
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
                    "--save", "", "--appendonly", "no"], check=True)
    wait_for(lambda: redis_answers(url), timeout=10, what="redis-server to start")

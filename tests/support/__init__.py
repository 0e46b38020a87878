"""Real parts for the integration tests and the benchmarks, one module per concern:

- env: the repository root, the test URLs (from GENESIS_TEST_*), the environment that points
  the producer and the workers at each other, a per-test TOML (use_config), FAST_RECOVERY,
  batch mode's knobs;
- waiting: wait_for;
- runs: the `producer` CLI in this process, submit, wait_until_reported, what SQL and the
  simulator hold of a run;
- redis_server, postgres: the servers (Redis started when absent; a database
  reset, cut off or watched);
- workers: `worker` / `celery worker` processes, re-pointing this process's Celery app;
- processes: fresh interpreters and the alembic CLI (start-up weight, migrations);
- browser, netns, forwarder, http_server: headless Chromium, network namespaces, a TCP relay
  (which can drop replies after the server answered), HTTP (a provider endpoint of a test's own, free ports, a URL's status);
- resources, tiers: the markers of what a test uses, `@uses(...)` for fixtures, and the pytest
  plugin that marks each test (`unit`, `redis`, ...) and guards the unit tier.
"""

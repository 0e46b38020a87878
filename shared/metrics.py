"""The project's own Prometheus metrics, from one scrape target (`producer metrics`).

Everything is read at scrape time, so one endpoint covers every worker on every host:
budget figures from the budget guard's Redis state, jobs by status from SQL, and the few
counters only workers see (limiter waits, 429s, provider errors) from shared/counters.py.
Celery's own metrics (tasks, workers, queues) are Flower's `/metrics`.
"""

from __future__ import annotations

import logging
from typing import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from shared import counters
from shared.config import Settings

log = logging.getLogger("genesis.metrics")

LEVELS = ("ok", "warning", "critical", "emergency")
RECENT_RUNS = 10  # jobs-by-status series for runs in flight plus this many recent ones


class GenesisCollector(Collector):
    """A prometheus_client collector that reads Redis and SQL on every scrape."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        from shared.budget import BudgetGuard

        self.settings = settings
        self.redis = client or redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self.budget = BudgetGuard(self.redis, settings)

    def collect(self) -> Iterator[Metric]:
        for source in (self._budget, self._worker_counters, self._journal, self._jobs, self._limits):
            up = GaugeMetricFamily(f"genesis_scrape_{source.__name__.strip('_')}_ok",
                                   "1 when this part of the scrape could be read.")
            try:
                yield from source()
                up.add_metric([], 1)
            except Exception as exc:  # noqa: BLE001 - one unreachable store must not hide the others
                log.warning("metrics: %s could not be read: %s", source.__name__.strip("_"), str(exc).splitlines()[0])
                up.add_metric([], 0)
            yield up

    def _budget(self) -> Iterator[Metric]:
        status = self.budget.status()
        for name, key, help_text in (
            ("genesis_spend_usd", "spent_usd", "Settled spend in the ledger (USD)."),
            ("genesis_reserved_usd", "reserved_usd", "Worst-case cost reserved by calls in flight (USD)."),
            ("genesis_budget_limit_usd", "limit_usd", "The budget limit (USD)."),
            ("genesis_budget_emergency_usd", "emergency_usd", "Spend at which the guard halts (USD)."),
        ):
            yield GaugeMetricFamily(name, help_text, value=status[key])
        level = GaugeMetricFamily("genesis_budget_level", "1 for the current budget level.", labels=["level"])
        for name in LEVELS:
            level.add_metric([name], 1.0 if status["level"] == name else 0.0)
        yield level
        yield GaugeMetricFamily("genesis_budget_halted", "1 while the budget guard has halted the provider queues.",
                                value=1.0 if status["halted"] else 0.0)

    def _worker_counters(self) -> Iterator[Metric]:
        families = {event: CounterMetricFamily(metric, help_text, labels=["provider", *extra])
                    for event, (metric, help_text, extra) in counters.EVENTS.items()}
        for event, labels, value in counters.read(self.redis):
            families[event].add_metric(labels, value)
        yield from families.values()

    def _journal(self) -> Iterator[Metric]:
        from shared.journal import JOURNAL_KEY, quarantined

        yield GaugeMetricFamily("genesis_journal_pending", "Paid calls journaled in Redis, waiting for the database.",
                                value=self.redis.hlen(JOURNAL_KEY))
        yield GaugeMetricFamily("genesis_journal_quarantined", "Journal entries that could not be replayed, kept in "
                                "quarantine for a human (genesis:journal:quarantine).", value=quarantined(self.redis))

    def _jobs(self) -> Iterator[Metric]:
        from shared.db import session_scope
        from shared.models import Job, Run, RunStatus

        jobs = GaugeMetricFamily("genesis_jobs", "Jobs by run and status.", labels=["run_id", "status"])
        runs = GaugeMetricFamily("genesis_runs", "Runs by status.", labels=["status"])
        with session_scope(self.settings.database_url) as session:
            in_flight = select(Run.id).where(col(Run.status).in_([RunStatus.queued, RunStatus.running, RunStatus.halted]))
            recent = select(Run.id).order_by(col(Run.created_at).desc()).limit(RECENT_RUNS)
            shown = set(session.exec(in_flight).all()) | set(session.exec(recent).all())
            if shown:
                rows = session.exec(
                    select(Job.run_id, Job.status, func.count()).where(col(Job.run_id).in_(shown))
                    .group_by(Job.run_id, Job.status)
                ).all()
                for run_id, status, n in rows:
                    jobs.add_metric([run_id, status], n)
            for status, n in session.exec(select(Run.status, func.count()).group_by(Run.status)).all():
                runs.add_metric([status], n)
        yield jobs
        yield runs
        yield self._batches()

    def _limits(self) -> Iterator[Metric]:
        """Each limiter bucket as `producer limits` shows it: what the provider stated (learned),
        the configured ceiling, what the fleet paces by now, and the last minute's calls and 429s."""
        from shared.limiter import RateLimiter

        labels = ["scope", "model", "pool", "kind"]
        learned = GaugeMetricFamily("genesis_rate_limit_learned", "Limit the provider stated in its headers (per "
                                    "minute; kind rpm, tpm, itpm/otpm: input/output tokens).", labels=[*labels, "header"])
        ceiling = GaugeMetricFamily("genesis_rate_limit_ceiling", "The [limits] ceiling (per minute).", labels=labels)
        in_force = GaugeMetricFamily("genesis_rate_limit_in_force", "The rate the fleet paces by now (per minute; "
                                     "0 = unlimited).", labels=labels)
        recent = GaugeMetricFamily("genesis_rate_limit_last_minute", "Calls and provider refusals (429/529) "
                                   "in the last minute.", labels=["scope", "model", "pool", "what"])
        for view in RateLimiter(self.redis, self.settings).buckets():
            names = [view.scope, view.model, view.pool]
            stated_of, ceiling_of = view.learned, view.ceiling
            for kind, stated, header, cap, pace in (
                    ("rpm", stated_of.rpm, stated_of.rpm_source, ceiling_of.rpm, view.in_force[0]),
                    ("tpm", stated_of.tpm, stated_of.tpm_source, ceiling_of.tpm, view.in_force[1]),
                    ("itpm", stated_of.input_tpm, "input-tokens", ceiling_of.itpm, view.in_force[2]),
                    ("otpm", stated_of.output_tpm, "output-tokens", ceiling_of.otpm, view.in_force[3])):
                if stated:
                    learned.add_metric([*names, kind, header], stated)
                if cap:
                    ceiling.add_metric([*names, kind], cap)
                in_force.add_metric([*names, kind], pace)
            recent.add_metric([*names, "calls"], view.calls_last_minute)
            recent.add_metric([*names, "refusals"], view.refusals_last_minute)
        yield from (learned, ceiling, in_force, recent)

    def _batches(self) -> Metric:
        from shared.batches import open_batch_counts
        from shared.models import OPEN_BATCH_STATES

        batches = GaugeMetricFamily("genesis_provider_batches", "Provider batches not yet ended, by provider and "
                                    "state (open: taking jobs; submitting; submitted: at the provider).",
                                    labels=["provider", "state"])
        counts = open_batch_counts(self.settings.database_url)
        for provider in sorted({p for p, _ in counts}):
            for state in OPEN_BATCH_STATES:
                batches.add_metric([provider, state], counts.get((provider, state), 0))
        return batches


def serve(settings: Settings, host: str, port: int):
    """Start the HTTP endpoint in a background thread; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(GenesisCollector(settings))
    return start_http_server(port, addr=host, registry=registry)

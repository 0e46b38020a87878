"""Every Run and Job state transition, in one place (design §10): short, conditional UPDATEs, so
that any number of workers, redeliveries, sweeps and producers agree on who runs a job, record it
once, and never overwrite a final outcome (a cancel always wins, an `ok` is never undone).

Split along its levels: `jobs` (claim, lease, requeue, finish), `runs` (settle, halt,
cancel, reopen, and the run queries) and `looks` (a sequential run's releases), judging by `rules`. Callers keep `lifecycle.X`.
"""

from shared.lifecycle.jobs import (
    RUN_CANCELLED,
    Claim,
    ClaimedJob,
    claim,
    end_unjudged_in_cancelled_run,
    finish_error,
    finish_halted,
    finish_judged,
    finish_ok,
    finish_reused,
    queued_jobs,
    recorded_answer,
    renew_lease,
    requeue,
    requeue_lost,
    running_holders,
    use_clock,
)
from shared.lifecycle.looks import advance_look, has_waiting, look_done, look_state, unfinished
from shared.lifecycle.rules import (
    IN_FLIGHT_RUNS,
    LEASE_MARGIN_S,
    UNFINISHED_JOBS,
    lease_seconds,
    running_claimed_before,
    stale_running,
)
from shared.lifecycle.runs import (
    RunAlreadyFinal,
    UnknownRun,
    cancel_run,
    job_counts,
    mark_runs_halted,
    reopen_run,
    runs_in_flight,
    runs_with_queued_jobs,
    runs_without_unfinished_jobs,
    settle_run_status,
)

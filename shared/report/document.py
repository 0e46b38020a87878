"""One document model, two renderers (markdown, HTML): they can never say different things.
A block is a tuple: ("title"|"h2"|"h3"|"p"|"banner", text), ("decision", overall, headlines, combined)
(`combined`: {agent: verdict} for agents with several candidates, else empty),
("list", items), ("table", headers, rows, align) with align one of "l"/"r" per column,
("chart", name) (HTML only; shared.report.charts draws it), ("drilldown", rows), ("looks", path)
(a sequential verdict's VerdictPath: its chart and table in HTML, its table in markdown). The
verdicts' chart comes right under the verdicts, the rule's text after it."""

from __future__ import annotations

from collections import Counter, defaultdict

from shared.report import format as fmt
from shared.report.sequential_section import as_sequential_run, sequential_section

DRILLDOWN_ANSWER_CHARS = 160


COMBINED_VERDICTS = "Agents with several candidates (GO if any is):"  # what both renderers title that list


def _combined_verdicts(data: dict) -> dict[str, str]:
    """An agent's own verdict where it has several candidates (GO if any is): one headline per
    comparison says the rest, so an agent with one candidate is not listed twice."""
    per_agent = Counter(comparison["agent"] for comparison in data["comparisons"])
    return {agent: verdict for agent, verdict in data["decision"]["by_agent"].items() if per_agent[agent] > 1}


def document(data: dict) -> list[tuple]:
    counts = data["counts"]
    blocks: list[tuple] = [
        ("title", f"Fine-tuning quality report: run {data['run_id']}"),
        ("p", f"Suite {data['suite']} · run created {fmt.date(data['created_at'])} · status "
              f"{data['status']} · {data['total_jobs']} jobs · report generated {fmt.date(data['generated_at'])}"),
    ]
    if data["simulated"]:
        blocks.append(("banner", "SIMULATED RUN: answers came from the provider simulator, not real models."))
    if not data["complete"]:
        blocks.append(("banner", f"INCOMPLETE: {counts['halted']} job(s) halted, "
                                 f"{counts['queued'] + counts['running']} queued or running. See the warnings."))
    decision = data["decision"]
    blocks += [
        ("h2", "Decision"),
        ("decision", decision["overall"], data["headlines"] or ["No candidate/baseline pair ran: no verdict."],
         _combined_verdicts(data)),
        ("chart", "forest"),
        *_sequential_blocks(data),
        ("p", "Rule: " + data["decision_rule"]),
        *_decision_detail(data),
        ("h2", "Candidate vs baseline"),
        _comparison_table(data),
        *_epochs_blocks(data.get("epochs")),
        ("h2", "Per agent and backend"),
        ("p", "Accuracy is the mean score over ok jobs (n); latency percentiles interpolate "
              "linearly between ranks over ok jobs. Cost is inference only, the judge's calls are "
              "beside it; cost per paid request is over the ok answers that were paid for (a reused "
              "answer made no call and cost $0)."),
        ("chart", "accuracy"),
        _backend_table(data["backends"]),
        ("h2", "Per backend"),
        ("chart", "latency"),
        _backend_summary_table(data["by_backend"]),
        ("h2", "Cost"),
        ("list", _cost_lines(data["costs"])),
        ("chart", "cost"),
        ("h2", "By difficulty"),
        _difficulty_table(data["by_difficulty"]),
        ("h2", "Where candidate and baseline disagree"),
        ("p", f"{len(data['disagreements'])} paired task(s) scored differently; the candidate's "
              "losses first. Answers are cut to their start"
              + (" (with several epochs: the scores are task means, the answers the first epoch's)."
                 if (data.get("epochs") or {}).get("k", 1) > 1 else ".")),
        ("drilldown", data["disagreements"]),
        ("h2", "Budget"),
        *_budget_blocks(data["budget"]),
        ("h2", "Warnings"),
        ("list", data["warnings"]) if data["warnings"] else ("p", "None."),
    ]
    return blocks


def _sequential_blocks(data: dict) -> list[tuple]:
    """A sequential run's looks under the verdicts' chart (fixed runs, and reports built before
    the design existed, have none)."""
    run = as_sequential_run(data.get("sequential"))
    return [] if run is None else sequential_section(run)


def _decision_detail(data: dict) -> list[tuple]:
    """Sensitivity (answered-only), power, and earlier decisions on the same models and suite
    (reports built before these existed lack the keys)."""
    blocks: list[tuple] = []
    if data.get("sensitivity"):
        blocks += [("p", "Sensitivity: the same comparison over the tasks both answered ok only."),
                   ("list", data["sensitivity"])]
    if data.get("power"):
        blocks += [("p", "Power: the smallest improvement this many tasks confirm (GO) at 80% power, at the "
                         "run's error share, assuming the candidate gets wrong a few of the baseline's right "
                         "answers (see [decision] assumed_loss_share)."),
                   ("list", data["power"])]
    history = data.get("earlier_decisions") or {}
    if history.get("rows"):
        blocks += [("p", "Earlier decisions on the same candidate model, baseline model and suite:"),
                   ("table", ["Run", "Created", "Agent", "Candidate model", "Baseline model", "Decision",
                              "Improvement (abs)", "Same tasks"],
                    [[r["run_id"], fmt.date(r["created_at"]), r["agent"], r["candidate_model"], r["baseline_model"],
                      r["decision"], fmt.pp(r["improvement_abs"]),
                      {True: "yes", False: "no", None: "n/a"}[r["same_tasks"]]] for r in history["rows"]],
                    "lllllllr")]
    if history.get("notes"):
        blocks.append(("list", history["notes"]))
    return blocks


def _epochs_blocks(epochs: dict | None) -> list[tuple]:
    """Repeated trials (submit --epochs k): nothing to say with one epoch (or an older report)."""
    if not epochs or epochs["k"] <= 1:
        return []
    blocks: list[tuple] = [("h2", "Repeated trials"), ("p", epochs["summary"]), ("p", epochs["rule"])]
    if epochs["lines"]:
        blocks.append(("list", epochs["lines"]))
    return blocks


def _comparison_table(data: dict) -> tuple:
    level = f"{data['confidence']:.0%}"
    return (
        "table",
        ["Agent", "Candidate", "Baseline", "n (paired)", "Candidate acc.", "Baseline acc.",
         "Improvement (rel)", "Improvement (abs)", "Needed (abs)", f"CI (abs, {level} family-wise)",
         "p (adjusted)", "Decision", "Pairs to settle (80% power)"],
        [[c["agent"], c["candidate"], c["baseline"], f"{c['n']} / {c['tasks']}",
          fmt.pct(c["candidate_accuracy"]), fmt.pct(c["baseline_accuracy"]),
          fmt.pct(c["improvement_rel"], signed=True), fmt.pp(c["improvement_abs"]), fmt.pp(c["threshold_abs"]),
          fmt.ci(c["ci95_abs"]), fmt.p_value(c["p_value"]), c["decision"],
          str(c["pairs_needed"]) if c["pairs_needed"] else ""]
         for c in data["comparisons"]],
        "lllrrrrrrrrlr",
    )


def _backend_table(rows: list[dict]) -> tuple:
    return (
        "table",
        ["Agent", "Backend", "Model", "Role", "n", "Reused", "Errors", "Halted", "Cut off", "Accuracy", "p50", "p95",
         "Input tok.", "Output tok.", "of which reasoning", "Cost (inference)", "Judge", "Total", "Cost / paid request"],
        [[b["agent"], _name(b), b["model"], b["role"] or "", str(b["n"]), str(b["reused"]), str(b["errors"]),
          str(b["halted"]), str(b.get("truncated", 0)), fmt.pct(b["accuracy"]), fmt.ms(b["latency_p50_ms"]),
          fmt.ms(b["latency_p95_ms"]), f"{b['input_tokens']:,}", f"{b['output_tokens']:,}",
          f"{b.get('reasoning_tokens', 0):,}", fmt.usd(b["cost_usd"]),
          fmt.usd(b["judge_cost_usd"]), fmt.usd(b["total_cost_usd"]), fmt.usd(b["cost_per_request_usd"])]
         for b in rows],
        "llll" + "r" * 15,
    )


def _name(row: dict) -> str:
    return f"{row['backend']} (batch)" if row.get("mode") == "batch" else row["backend"]


def _backend_summary_table(rows: list[dict]) -> tuple:
    def latency(b: dict, q: str) -> str:
        return fmt.ms(b["latency_ms"][q]) if b["latency_ms"] else "n/a"

    return (
        "table",
        ["Backend", "Role", "n", "Accuracy", "Latency p25", "p50", "p75", "p95", "Cost (inference)",
         "Judge", "Inference / accuracy point"],
        [[_name(b), b["role"] or "", str(b["n"]), fmt.pct(b["accuracy"]), latency(b, "p25"),
          latency(b, "p50"), latency(b, "p75"), latency(b, "p95"), fmt.usd(b["cost_usd"]),
          fmt.usd(b["judge_cost_usd"]), fmt.usd(b["cost_per_accuracy_point_usd"])]
         for b in rows],
        "ll" + "r" * 9,
    )


def _difficulty_table(rows: list[dict]) -> tuple:
    levels = list(dict.fromkeys(r["difficulty"] for r in rows))
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for r in rows:
        cells[(r["agent"], r["backend"])][r["difficulty"]] = f"{fmt.pct(r['accuracy'])} (n={r['n']})"
    return (
        "table",
        ["Agent", "Backend", *levels],
        [[agent, backend, *(row.get(level, "") for level in levels)] for (agent, backend), row in cells.items()],
        "ll" + "r" * len(levels),
    )


def drilldown_table(rows: list[dict]) -> tuple:
    return (
        "table",
        ["Agent", "Task", "Difficulty", "Kind", "Candidate score", "Baseline score", "Prompt (start)",
         "Candidate answer", "Baseline answer"],
        [[r["agent"], r["task_id"], r["difficulty"], r["kind"], f"{r['candidate_score']:.2f}",
          f"{r['baseline_score']:.2f}", fmt.clip(r["prompt_start"], DRILLDOWN_ANSWER_CHARS),
          fmt.clip(r["candidate_answer"], DRILLDOWN_ANSWER_CHARS), fmt.clip(r["baseline_answer"], DRILLDOWN_ANSWER_CHARS)]
         for r in rows],
        "llllrrlll",
    )


def _cost_lines(costs: dict) -> list[str]:
    share = f", {fmt.pct(costs['judge_share'])} of this run's cost" if costs["judge_share"] is not None else ""
    reused = costs["reuse"]["jobs"]
    return [
        f"inference: {fmt.usd(costs['inference_usd'])}"
        + (f" ({reused} reused answer(s) made no call: $0)" if reused else ""),
        f"judge: {fmt.usd(costs['judge_usd'])} over {costs['judge_calls']} calls{share}",
        f"total: {fmt.usd(costs['total_usd'])} (the ledger holds {fmt.usd(costs['ledger_usd'])} for this run)",
        *([f"batch mode ({', '.join(costs['batch_backends'])}): {fmt.usd(costs['batch_usd'])} at the batch price, "
           f"{fmt.usd(costs['batch_saved_usd'])} less than the same answers at realtime prices; their latency "
           "(a batch's turnaround) is left out of the latency figures"] if costs.get("batch_backends") else []),
        *([f"by key ({'; '.join(_key_spend(k) for k in costs['keys'])})"] if _several_keys(costs.get("keys")) else []),
    ]


def _several_keys(keys: list[dict] | None) -> bool:
    """Worth a line when some backend's calls went through more than one key variable."""
    backends = [k["backend"] for k in keys or []]
    return len(backends) != len(set(backends))


def _key_spend(key: dict) -> str:
    return f"{key['backend']} {key['key_env']}: {key['calls']} calls, {fmt.usd(key['usd'])}"


def _budget_blocks(budget: dict) -> list[tuple]:
    t = budget["thresholds"]
    blocks: list[tuple] = [(
        "list",
        [
            f"Spent (all runs): {fmt.usd(budget['spent_usd'])} of {fmt.usd(budget['limit_usd'])} "
            f"({budget['used_fraction']:.1%}), {fmt.usd(budget['remaining_usd'])} left before the emergency "
            f"threshold, level {budget['level']}"
            + (f" — queues HALTED by the budget guard: {budget['halt_reason']}" if budget["halted"] else ""),
            f"This run: {fmt.usd(budget['run_cost_usd'])} in the ledger, "
            f"{fmt.usd(budget['jobs_cost_usd'])} of inference recorded on its jobs",
            f"Thresholds: warning {t['warning']:.0%}, critical {t['critical']:.0%}, "
            f"emergency {t['emergency']:.0%} (spend is refused beyond emergency)",
        ],
    )]
    if budget["events"]:
        blocks.append((
            "table",
            ["At", "Kind", "Level", "Spent", "Limit", "Message"],
            [[fmt.date(e["at"]), e["kind"], e["level"], fmt.usd(e["spent_usd"]), fmt.usd(e["limit_usd"]),
              e["message"]] for e in budget["events"]],
            "lllrrl",
        ))
    return blocks

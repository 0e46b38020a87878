"""The go/no-go rule in words, for the report and the dry run: the answered-only line, the power
line, what each GO rule promises, and the rule's own text. The rule itself is
shared.report.decision; this module only says it."""

from __future__ import annotations

from shared.config.tables import DecisionConfig
from shared.report.decision import MIN_PAIRED_COVERAGE, POOLED, points


def sensitivity_line(c: dict) -> str:
    """The answered-only comparison beside the main one."""
    who = "all agents pooled" if c["agent"] == POOLED else c["agent"]
    a = c["answered_only"]
    both = c.get("both_errors", 0)
    failed = (f"{c['candidate_errors']} candidate error(s) counted as 0, {c['baseline_errors']} baseline error(s) "
              f"({both} of them failed by both) and {c['missing']} missing left out")
    if a["ci95_abs"] is None:
        return f"{who}: answered-only: no task answered by both ({failed})"
    return (f"{who}: answered-only (both ok, n={a['n']}): {points(a['improvement_abs'])} pp, CI "
            f"{points(a['ci95_abs'][0])}..{points(a['ci95_abs'][1])}: {a['decision']} ({failed})")


def go_promise(go: str, error: float) -> str:
    """One sentence: what GO under `go` promises, and what it does not."""
    if go == "bar":
        return (f'GO (go = "bar") promises that the improvement clears the bar: with every candidate at or below '
                f"the bar, some verdict says GO in at most {error:.0%} of runs; it costs power (a larger true gain "
                "is needed for GO).")
    return (f'GO (go = "better") promises that the candidate is better than its baseline (with none better, some '
            f"verdict says GO in at most {error:.0%} of runs); it does not promise the bar: the improvement meets it "
            'only as measured, and a candidate just below the bar can get GO (go = "bar" promises that).')


def by_rule_text(smallest: dict | None, go: str) -> str:
    """`+11.6 pp or more under "better" (the chosen rule); +17.8 pp or more under "bar"`."""
    if not smallest:
        return ""
    parts = [("no improvement" if smallest[rule] is None else f"{100 * smallest[rule]:+.1f} pp or more")
             + f' under "{rule}"' + (" (the chosen rule)" if rule == go else "")
             for rule in sorted(smallest, key=lambda r: r != go)]
    return "; ".join(parts)


def power_line(c: dict) -> str:
    who = "all agents pooled" if c["agent"] == POOLED else c["agent"]
    p = c["power"]
    if p is None:
        return f"{who}: not computed"
    if not p["can_ever_go"]:
        return f"{who}: {p['tasks']} tasks cannot reach GO at all: even a candidate right on every task misses the bar"
    failures = ""
    if "candidate_error_share" in p:  # reports built before the run's failures entered the figure lack it
        failures = (f", this run's failures: {p['candidate_error_share']:.0%} candidate errors, "
                    f"{p['left_out_share']:.0%} of tasks left out, loss share {p['loss_share']:.0%}")
    if p.get("design_effect", 1.0) > 1.0:
        failures += f"; {p['clusters']} task families, design effect {p['design_effect']:.2f}"
    context = f"(baseline accuracy {_share(p['baseline_accuracy'])}{failures})"
    if p["smallest_confirmable_abs"] is None and not any((p.get("smallest_confirmable_by_go") or {}).values()):
        return f"{who}: {p['tasks']} tasks cannot confirm any improvement at 80% power {context}"
    by_rule = p.get("smallest_confirmable_by_go")
    if by_rule:
        return f"{who}: {p['tasks']} tasks confirm at 80% power an improvement of {by_rule_text(by_rule, p['go_rule'])} {context}"
    return (f"{who}: {p['tasks']} tasks confirm an improvement of {100 * p['smallest_confirmable_abs']:+.1f} pp or more "
            f"at 80% power {context}")


def _share(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0%}"


def rule_text(rule: DecisionConfig) -> str:
    threshold = f"{rule.min_improvement * 100:g}%"
    level = f"{rule.confidence:.0%}"
    error = f"{1 - rule.confidence:.0%}"
    if rule.go == "bar":
        go = (f"GO when the candidate's accuracy is at least (1 + {rule.min_improvement:g}) times the baseline's "
              "with the comparison's confidence (the lower end of the interval of candidate - "
              f"(1 + {rule.min_improvement:g}) x baseline above zero, which puts the difference's interval above the "
              "required improvement), measured on the same tasks.")
    else:
        go = (f"GO when the fine-tuned (candidate) model beats its baseline by at least {threshold} relative "
              "((candidate - baseline) / baseline accuracy) AND the interval of the difference lies above zero, "
              "both measured on the same tasks.")
    return (
        f"{go} {go_promise(rule.go, 1 - rule.confidence)} NO-GO when the interval's upper end is below the required "
        f"improvement ({threshold} of the baseline's accuracy, in points). INCONCLUSIVE otherwise, and when "
        f"fewer than {MIN_PAIRED_COVERAGE:.0%} of the tasks are paired; the report then says how many paired "
        "tasks would settle it at 80% power if the observed differences were the truth. A candidate error "
        "counts as a score of 0; a task the baseline failed (whether or not the candidate failed it too), or "
        "never attempted (halted, cancelled), is left out; the answered-only comparison is shown beside it. The interval inverts a score test of the "
        "mean paired difference (Tango's for 0/1 scores, the same construction for fractional ones, with a "
        "continuity correction of half a task); when suite tasks name a `cluster` (a family sharing a source), "
        "the statistic is divided by the root of the observed design effect (Rao-Scott: the families' variance "
        "over independent tasks'), and the power figure counts that many fewer independent tasks. One error rate for the whole run (Bonferroni, weighted): "
        f"{error} split half to the pooled verdict(s), half evenly over the per-agent ones; each interval end "
        "holds at 1 minus its share, and the p-value is the one-sided p of 'no better' times the same factor. "
        f"So with no candidate {'above the bar' if rule.go == 'bar' else 'better than its baseline'}, some verdict "
        f"says GO in at most {error} of runs, and "
        f"with every candidate above the bar, some verdict says NO-GO in at most {error} ({level} family-wise). "
        "Per agent, and overall on all agents' paired tasks pooled (each task once; the spread includes the "
        "differences between agents, so agents of unequal difficulty widen it, never narrow it); an agent "
        "with several candidates is GO if any of them is."
    )

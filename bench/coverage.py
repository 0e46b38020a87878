"""Coverage of the decision's interval (shared.stats): how often the nominal 95% interval of the
paired difference contains the true difference, over n, discordance and true difference.

    python bench/coverage.py            # the full grid (~3 min here)
    python bench/coverage.py --quick    # fewer sizes and samples (~30 s)

0/1 scores: exact. The interval depends only on (wins b, losses c) at a given n, so coverage
is the sum over every (b, c) of its multinomial probability times "the interval of (b, c)
contains p10 - p01" (cells below 1e-14 left out). Discordance = p10 + p01 (share of tasks the
two models score differently), true difference = p10 - p01.

Quarter-step scores (keywords k/4, judge grades): simulated, `--samples` per point, with two
shapes of the discordant differences: "spread" (sizes 1/4..1 equally likely, either sign) and
"skewed" (wins of a whole point, losses of a quarter; its mirror image has the same coverage,
the interval being symmetric). Points a shape cannot reach are left out. Monte Carlo standard
error at 0.95 with 2,000 samples: 0.005.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.stats import CONTINUITY, bounds  # noqa: E402

SIZES = (5, 10, 20, 50, 100, 300, 1000)
DISCORDANCE = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4)
DIFFERENCES = (-0.2, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.2)
QUARTER_DISCORDANCE = (0.05, 0.1, 0.2, 0.4)
QUARTER_DIFFERENCES = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2)
QUARTERS = np.linspace(-1.0, 1.0, 9)
ALPHA_EACH = 0.025  # a nominal 95% two-sided interval
_CELL_FLOOR = 1e-14


def binary_points(discordance=DISCORDANCE, differences=DIFFERENCES) -> list[tuple[float, float]]:
    return [(d, delta) for d in discordance for delta in differences if abs(delta) <= d + 1e-12]


def binary_coverage(n: int, points: list[tuple[float, float]], alpha_each: float = ALPHA_EACH,
                    continuity: float = CONTINUITY) -> list[float]:
    """Exact coverage at each (discordance, difference) for 0/1 scores and n pairs."""
    log_factorial = np.array([math.lgamma(k + 1.0) for k in range(n + 1)])
    wins, losses = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    inside = wins + losses <= n
    wins, losses = wins[inside], losses[inside]
    ties = n - wins - losses
    base = log_factorial[n] - log_factorial[wins] - log_factorial[losses] - log_factorial[ties]

    def xlogy(k: np.ndarray, p: float) -> np.ndarray:
        """k log p, with 0 log 0 = 0 (and any k > 0 at p = 0 impossible)."""
        return np.where(k > 0, k * math.log(p) if p > 0 else -np.inf, 0.0)

    def probabilities(d: float, delta: float) -> np.ndarray:
        p10, p01 = (d + delta) / 2.0, (d - delta) / 2.0
        return np.exp(base + xlogy(wins, p10) + xlogy(losses, p01) + xlogy(ties, 1.0 - d))

    table = np.array([probabilities(d, delta) for d, delta in points])
    needed = table.max(axis=0) > _CELL_FLOOR
    counts = np.stack([losses[needed], ties[needed], wins[needed]], axis=1).astype(float)
    low, high = bounds(np.array([-1.0, 0.0, 1.0]), counts, alpha_each, continuity)
    results = []
    for (d, delta), p in zip(points, table):
        covered = (low <= delta + 1e-9) & (high >= delta - 1e-9)
        results.append(float(p[needed][covered].sum()))
    return results


def quarter_distribution(shape: str, d: float, delta: float) -> np.ndarray | None:
    """Probabilities of the 9 quarter-step differences -1..+1, or None if out of reach."""
    p = np.zeros(9)
    if shape == "spread":  # sizes 1/4, 1/2, 3/4, 1 equally likely; mean size 5/8
        wins = (d + delta / 0.625) / 2.0
        if not -1e-12 <= wins <= d + 1e-12:
            return None
        p[5:] = max(wins, 0.0) / 4.0
        p[:4] = max(d - wins, 0.0) / 4.0
    else:  # skewed: wins +1, losses -1/4
        wins = (delta + 0.25 * d) / 1.25
        if not -1e-12 <= wins <= d + 1e-12:
            return None
        p[8], p[3] = max(wins, 0.0), max(d - wins, 0.0)
    p[4] = 1.0 - d
    return p


def quarter_coverage(n: int, shape: str, d: float, delta: float, samples: int, rng: np.random.Generator,
                     alpha_each: float = ALPHA_EACH, continuity: float = CONTINUITY) -> float | None:
    p = quarter_distribution(shape, d, delta)
    if p is None:
        return None
    counts = rng.multinomial(n, p / p.sum(), size=samples).astype(float)
    low, high = bounds(QUARTERS, counts, alpha_each, continuity)
    return float(np.mean((low <= delta + 1e-9) & (high >= delta - 1e-9)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n in 5, 20, 100; 1,000 samples per quarter-step point")
    parser.add_argument("--samples", type=int, default=None, help="samples per quarter-step point (default 2000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--continuity", type=float, default=CONTINUITY,
                        help=f"the correction, in tasks (default {CONTINUITY}; 0 = the plain score interval)")
    args = parser.parse_args()
    sizes = (5, 20, 100) if args.quick else SIZES
    samples = args.samples or (1000 if args.quick else 2000)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    points = binary_points()
    print(f"nominal 95% interval (each end 97.5%), continuity correction {args.continuity} task; "
          f"0/1 scores exact, quarter steps {samples} samples per point")
    print(f"0/1 scores: minimum / mean coverage over {len(points)} (discordance, difference) points per n")
    worst = (2.0, None)
    table = {n: binary_coverage(n, points, continuity=args.continuity) for n in sizes}
    for n, cover in table.items():
        low = int(np.argmin(cover))
        print(f"  n={n:<5} min {cover[low]:.4f} at discordance {points[low][0]:.0%}, difference "
              f"{points[low][1]:+.2f}; mean {np.mean(cover):.4f}")
        if cover[low] < worst[0]:
            worst = (cover[low], ("0/1", n, *points[low]))
    print("0/1 scores, full table (rows: discordance/difference, columns: n)")
    print("  " + f"{'disc':>5} {'diff':>6} " + " ".join(f"{n:>7}" for n in sizes))
    for i, (d, delta) in enumerate(points):
        print("  " + f"{d:>5.0%} {delta:>+6.2f} " + " ".join(f"{table[n][i]:>7.4f}" for n in sizes))
    for shape in ("spread", "skewed"):
        print(f"quarter steps, {shape}: coverage (rows: discordance/difference, columns: n)")
        print("  " + f"{'disc':>5} {'diff':>6} " + " ".join(f"{n:>7}" for n in sizes))
        for d in QUARTER_DISCORDANCE:
            for delta in QUARTER_DIFFERENCES:
                row = [quarter_coverage(n, shape, d, delta, samples, rng, continuity=args.continuity) for n in sizes]
                if row[0] is None:
                    continue
                print("  " + f"{d:>5.0%} {delta:>+6.2f} " + " ".join(f"{c:>7.4f}" for c in row), flush=True)
                for n, c in zip(sizes, row):
                    if c < worst[0]:
                        worst = (c, (f"quarter/{shape}", n, d, delta))
    kind, n, d, delta = worst[1]
    print(f"minimum over the grid: {worst[0]:.4f} ({kind}, n={n}, discordance {d:.0%}, difference {delta:+.2f}); "
          f"target >= 0.94; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

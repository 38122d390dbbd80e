"""How the review threshold's rule was chosen: synthetic scores only, no labelled row read (issue 20).

    uv run python bench/review_rule.py [--target 0.9] [--labelled 260] [--draws 1000]

A labelled set of --labelled products gets confidences drawn from a Beta distribution and outcomes drawn
from the true accuracy at each confidence: the confidence itself (calibrated) or its 1.4th power
(over-confident: a promised 0.9 is 0.86, a promised 0.7 is 0.61). Each rule picks a threshold for --target
on that set; what it delivers is the true precision of a whole population above that threshold (400,000
products from the same distribution), the figure a user's unseen catalogue converges to. Per scenario and
rule: the mean delivered precision, how often it falls below target - 0.05, the mean coverage, and how often
the rule finds no threshold (every product to review). The best coverage any threshold could have while
keeping the target is printed with each scenario.

The rules:
- `reaches`: the smallest threshold whose held-out precision reaches the target (the pipeline's rule until
  this bench): the largest coverage that looks good on the labelled set, which sampling flatters;
- `promised`: the smallest threshold whose accepted products' mean confidence reaches the target;
- `pipeline`: the smallest reaching the target both ways (coverage.threshold_for_precision).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import polars as pl
from quality import markdown_tables

from taxo_pipeline.classification.coverage import coverage_table, threshold_for_precision

SHAPES = ((2, 3), (1, 2), (3, 4), (0.7, 1.2), (2, 1.5))  # Beta(a, b) of the confidences: mean 0.33 to 0.57
OVERCONFIDENCE = {"calibrated": 1.0, "over-confident": 1.4}  # true accuracy = confidence ** this


def _reaching(confidence: np.ndarray, right: np.ndarray, target: float) -> float | None:
    table = coverage_table(confidence, np.repeat(right[:, None], 3, axis=1))
    return min((r["threshold"] for r in table if r["precision_exact"] >= target - 1e-12), default=None)


def _promised(confidence: np.ndarray, target: float) -> float | None:
    ordered = np.sort(confidence)[::-1]
    keeps = np.cumsum(ordered) / np.arange(1, len(ordered) + 1) >= target - 1e-12
    return float(ordered[keeps].min()) if keeps.any() else None


RULES = {
    "reaches": _reaching,
    "promised": lambda confidence, right, target: _promised(confidence, target),
    "pipeline": threshold_for_precision,
}


def scenario(shape: tuple[float, float], power: float, labelled: int, target: float, draws: int) -> list[dict]:
    rng = np.random.default_rng(0)
    population = np.sort(rng.beta(*shape, 400_000))[::-1]
    precision_above = np.cumsum(population**power) / np.arange(1, len(population) + 1)

    def delivered(threshold: float | None) -> tuple[float, float]:
        accepted = 0 if threshold is None else int(np.searchsorted(-population, -threshold, side="right"))
        return (precision_above[accepted - 1], accepted / len(population)) if accepted else (np.nan, 0.0)

    found: dict[str, list[tuple[float, float]]] = {rule: [] for rule in RULES}
    for _ in range(draws):
        confidence = rng.beta(*shape, labelled)
        right = rng.random(labelled) < confidence**power
        for rule, pick in RULES.items():
            found[rule].append(delivered(pick(confidence, right, target)))
    best = float(np.mean(precision_above >= target))
    rows = []
    for rule, results in found.items():
        precision, coverage = np.array(results).T
        rows.append({"confidence ~": f"Beta{shape}", "best coverage": round(best, 3), "rule": rule,
                     "mean precision": round(float(np.nanmean(precision)), 3) if np.isfinite(precision).any() else None,
                     f"below {target - 0.05:.2f}": round(float(np.mean(np.nan_to_num(precision, nan=1) < target - 0.05)), 2),
                     "coverage": round(float(coverage.mean()), 3),
                     "no threshold": round(float(np.mean(np.isnan(precision))), 2)})  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--labelled", type=int, default=260, help="labelled products the threshold is chosen on")
    parser.add_argument("--draws", type=int, default=1000, help="labelled sets drawn per scenario")
    args = parser.parse_args(argv)
    with markdown_tables(fmt_str_lengths=40, tbl_width_chars=200):
        for name, power in OVERCONFIDENCE.items():
            rows = [r for shape in SHAPES for r in scenario(shape, power, args.labelled, args.target, args.draws)]
            print(f"{name} (true accuracy = confidence ** {power}); target {args.target}, {args.labelled} labelled "
                  f"products, {args.draws} draws each:", pl.DataFrame(rows), "", sep="\n")  # fmt: skip


if __name__ == "__main__":
    main()

"""Confidence on unseen products: for every path approach, the calibration method chosen and fitted on the
protocol's development part, measured on the test part (issue 20).

    uv run python bench/calibration.py [--models M,...] [--products P] [--taxonomy T] [--cache DIR] [--target 0.9]
                                       [--splits 20]

--models as in bench/quality.py (all-MiniLM-L6-v2, plus all-mpnet-base-v2 once bench/mpnet.py assembled it);
each model's tables, then one table of every model's figures. Each approach runs through its own `classify` as in bench/quality.py (same in-process encoder and
cache): zero-shot approaches on every product; label transfer with the dev products as its labelled
pool (cross-validated inside dev for the dev rows), so no test label is read. Then, per approach:
- the method (taxo_pipeline/classification/calibration.py METHODS) with the lowest 5-fold cross-fitted
  Brier score on the dev rows, fitted on the dev rows and applied to the test rows;
- on the test rows: ECE over 10 equal-count bins, the largest gap between a decile's mean predicted
  confidence and its observed exact-L3 accuracy, and the `noise` column: the mean ECE a perfectly
  calibrated confidence would show on the same rows (outcomes drawn from the confidences themselves,
  500 draws), i.e. what sampling alone gives at this test size, and `gap noise`, the same for the
  largest decile gap;
- the review threshold for --target chosen on the dev rows' cross-fitted confidences (the smallest
  whose dev precision reaches it), and the test rows' precision and coverage at it;
- `k-fold ECE`: every product's cross-fitted confidence, the figure the pipeline stores.
Then precision at coverage as the pipeline stores it for label transfer (the leaderboard's best): its
evaluation predictions (5-fold cross-validated over every labelled product), the method chosen on dev,
each product's cross-fitted confidence; one row per tenth of coverage.
Last, the repeated holdout (--splits, default 20): one split of 128 test rows leaves the ECE's sampling noise
above the goal, so the same measure is repeated over random 80/20 splits of every labelled product, the
calibration fitted as the pipeline fits it on the 80% and judged on the 20% (repeated_holdout), with
how often a perfectly calibrated confidence would meet the decile goal at a few catalogue sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import polars.selectors as cs
import quality

from taxo_pipeline.approaches import (
    hierarchical_cascade,
    label_transfer,
    score_fusion,
    text_retrieval,
    title_description,
)
from taxo_pipeline.approaches.spec import ClassifyRequest
from taxo_pipeline.classification.calibration import (
    METHODS,
    choose_method,
    cross_fitted,
    deciles,
    ece,
    features,
    fit,
    fit_calibration,
    max_gap,
    predict,
)
from taxo_pipeline.classification.coverage import correct_by_level, coverage_table, threshold_for_precision
from taxo_pipeline.evaluation.protocol import DEV_FRACTION

PIPELINE = "label-transfer [full-depth], as evaluated"
RUNS = {  # "approach [documents]": (approach module, documents)
    f"{module.APPROACH.name} [{documents}]": (module, documents)
    for module, documents in (
        (text_retrieval, "full-path"),
        (title_description, "full-path"),
        (title_description, "leaf"),
        (title_description, "full-depth"),
        (score_fusion, score_fusion.APPROACH.documents),
        (hierarchical_cascade, hierarchical_cascade.APPROACH.documents),
        (label_transfer, label_transfer.APPROACH.documents),
    )
}


def classify(
    data: quality.Data, evidence: quality.LocalEvidence, module, variant: str, products: pl.DataFrame, **labelled
) -> list:
    """`products`' top-5 through the approach's own classify, in the products' order."""
    request = ClassifyRequest(products=products, taxonomy=data.taxonomy, evidence=evidence,
                              model=evidence.encoder.model_id, variant=variant, model_family="text", top_k=5, **labelled)  # fmt: skip
    result = module.classify(request)
    by_id = dict(zip(result.product_ids, result.ranked, strict=True))
    return [by_id.get(p, []) for p in products["product_id"].to_list()]


def ranked_by_approach(data: quality.Data, evidence: quality.LocalEvidence) -> dict[str, list]:
    """Per approach and documents, every product's top-5 (in the products' order)."""
    dev, test = data.products.filter(pl.Series(data.dev)), data.products.filter(pl.Series(~data.dev))

    def run(module, variant: str, products: pl.DataFrame = data.products, **labelled) -> list:
        return classify(data, evidence, module, variant, products, **labelled)

    found = {}
    for name, (module, documents) in RUNS.items():
        print(f"classifying: {name}", file=sys.stderr, flush=True)
        if module.APPROACH.needs_labels:
            on_dev = run(module, documents, dev, labelled=dev, cross_validate=True)
            found[name] = quality._merge(data, on_dev, run(module, documents, test, labelled=dev))
        else:
            found[name] = run(module, documents)
    print("classifying: label transfer as the evaluation does", file=sys.stderr, flush=True)
    documents = label_transfer.APPROACH.documents
    found[PIPELINE] = run(label_transfer, documents, labelled=data.products, cross_validate=True)
    return found


def pipeline_coverage(data: quality.Data, ranked: list) -> pl.DataFrame:
    """The precision_at_coverage rows the pipeline stores, one per tenth of coverage (the threshold
    accepting at least that share)."""
    ids = data.products["product_id"].to_list()
    correct = correct_by_level([r[0][0] if r else None for r in ranked], data.truths)
    calibration, held_out = fit_calibration(ids, features(ranked), correct[:, 2], data.dev)
    table = coverage_table(held_out, correct)
    rows = [next(r for r in table if r["coverage"] >= share - 1e-9) for share in np.arange(1, 11) / 10]
    print(f"\n{PIPELINE}: method {calibration.method}, k-fold ECE {calibration.ece:.3f}, max decile gap "
          f"{max_gap(calibration.reliability):.3f}; review thresholds: "
          + ", ".join(f"P {t}: {threshold_for_precision(held_out, correct[:, 2], t)}"
                      for t in (0.8, 0.9, 0.95)))  # fmt: skip
    return pl.DataFrame(rows).unique("threshold", keep="first", maintain_order=True).with_columns(pl.all().round(3))


def noise_floor(confidence: np.ndarray, draws: int = 500) -> tuple[float, float]:
    """The mean ECE and mean largest decile gap of outcomes drawn from the confidences themselves: what a
    perfectly calibrated score shows on this many rows."""
    rng = np.random.default_rng(0)
    drawn = [deciles(confidence, rng.random(len(confidence)) < confidence) for _ in range(draws)]
    return float(np.mean([ece(bins) for bins in drawn])), float(np.mean([max_gap(bins) for bins in drawn]))


def decile_goal_odds(confidence: np.ndarray, rows: int, gap: float = 0.07, draws: int = 200) -> float:
    """How often a perfectly calibrated confidence, distributed as `confidence`, keeps every decile within
    `gap` of its observed accuracy on `rows` products."""
    rng = np.random.default_rng(0)
    drawn = (rng.choice(confidence, rows) for _ in range(draws))
    return float(np.mean([max_gap(deciles(p, rng.random(rows) < p)) <= gap for p in drawn]))


def figures(data: quality.Data, ranked: list, target: float) -> dict:
    ids = data.products["product_id"].to_list()
    correct = correct_by_level([r[0][0] if r else None for r in ranked], data.truths)[:, 2].astype(np.float64)
    f, dev, test = features(ranked), np.flatnonzero(data.dev), np.flatnonzero(~data.dev)
    method, briers = choose_method(ids, f, correct, data.dev)
    on_test = {m: predict(m, fit(m, f.take(dev), correct[dev]), f.take(test)) for m in METHODS}
    confidence = on_test[method]
    bins = deciles(confidence, correct[test])
    dev_held_out = cross_fitted(method, [ids[i] for i in dev], f.take(dev), correct[dev])
    threshold = threshold_for_precision(dev_held_out, correct[dev].astype(bool), target)
    accepted = confidence >= threshold if threshold is not None else np.zeros(len(test), dtype=bool)
    noise, gap_noise = noise_floor(confidence)
    return {
        "method (dev)": method,
        "test acc": round(float(correct[test].mean()), 3),
        "test ECE": round(ece(bins), 3),
        "noise": round(noise, 3),
        "max decile gap": round(max_gap(bins), 3),
        "gap noise": round(gap_noise, 3),
        f"threshold {target}": None if threshold is None else round(threshold, 3),
        "test precision": round(float(correct[test][accepted].mean()), 3) if accepted.any() else None,
        "test coverage": round(float(accepted.mean()), 3),
        "k-fold ECE": round(ece(deciles(cross_fitted(method, ids, f, correct), correct)), 3),
        **{f"test ECE {m}": round(ece(deciles(on_test[m], correct[test])), 3) for m in METHODS},
        "dev Brier": briers,
        "deciles": bins,
    }


# Catalogue sizes at which the decile goal's odds are printed: the 495 rows, the pooled holdout's, more.
GOAL_ROWS = (495, 1040, 5000)


def repeated_holdout(
    data: quality.Data, evidence: quality.LocalEvidence, ranked: dict[str, list], target: float, splits: int
) -> pl.DataFrame:
    """Unseen products, many times over: in each of `splits` random splits the calibration is fitted as the
    pipeline fits it on 80% of the labelled products (method chosen on their dev rows, review threshold for
    `target` from their cross-fitted confidences) and applied to the other 20%, which label transfer
    classifies with the 80% as its labelled pool, as classify-products does. Held-out rows of every split
    are pooled (a product is held out in about a fifth of the splits); the split sizes never change."""
    rng, n, ids = np.random.default_rng(0), data.products.height, data.products["product_id"].to_list()
    truths = np.array(data.truths, dtype=object)
    pooled: dict[str, tuple[list, list, list, list]] = {name: ([], [], [], []) for name in ranked if name != PIPELINE}
    for split in range(splits):
        order = rng.permutation(n)
        fitted, held = np.sort(order[: round(0.8 * n)]), np.sort(order[round(0.8 * n) :])
        print(f"repeated holdout: split {split + 1}/{splits}", file=sys.stderr, flush=True)
        for name, (confidence, correct, accepted, methods) in pooled.items():
            module, documents = RUNS[name]
            if module.APPROACH.needs_labels:
                pool = data.products[fitted]
                on_fitted = classify(data, evidence, module, documents, pool, labelled=pool, cross_validate=True)
                on_held = classify(data, evidence, module, documents, data.products[held], labelled=pool)
            else:
                on_fitted, on_held = [ranked[name][i] for i in fitted], [ranked[name][i] for i in held]
            y_fitted, y_held = (correct_by_level([r[0][0] if r else None for r in rows], list(truths[part]))[:, 2]
                                for rows, part in ((on_fitted, fitted), (on_held, held)))  # fmt: skip
            calibration, cross = fit_calibration(
                [ids[i] for i in fitted], features(on_fitted), y_fitted, data.dev[fitted]
            )
            threshold = threshold_for_precision(cross, y_fitted.astype(bool), target)
            confidence.append(calibration.confidence(features(on_held)))
            correct.append(y_held.astype(np.float64))
            accepted.append(confidence[-1] >= (np.inf if threshold is None else threshold))
            methods.append(calibration.method)
    rows = []
    for name, (confidence, correct, accepted, methods) in pooled.items():
        p, y, a = np.concatenate(confidence), np.concatenate(correct), np.concatenate(accepted)
        bins, (noise, gap_noise) = deciles(p, y), noise_floor(p, draws=100)
        rows.append({"approach": name, "methods": ", ".join(f"{m} {methods.count(m)}" for m in sorted(set(methods))),
                     "held-out rows": len(p), "accuracy": round(float(y.mean()), 3), "ECE": round(ece(bins), 3),
                     "noise": round(noise, 3), "max decile gap": round(max_gap(bins), 3),
                     "gap noise": round(gap_noise, 3),
                     **{f"perfect within 0.07 at {n}": decile_goal_odds(p, n) for n in GOAL_ROWS},
                     f"precision at threshold {target}": round(float(y[a].mean()), 3) if a.any() else None,
                     "coverage": round(float(a.mean()), 3),
                     "deciles": " ".join(f"{b['predicted']:.2f}/{b['observed']:.2f}" for b in bins)})  # fmt: skip
    return pl.DataFrame(rows)


def report(data: quality.Data, encoder: quality.Encoder, target: float, splits: int) -> pl.DataFrame:
    """One model's figures, printed with each approach's deciles, the pipeline's precision at coverage and
    the repeated holdout."""
    with tempfile.TemporaryDirectory() as index_dir:
        evidence = quality.LocalEvidence(encoder, data, Path(index_dir))
        ranked = ranked_by_approach(data, evidence)
        holdout = repeated_holdout(data, evidence, ranked, target, splits) if splits else None
    rows = {name: figures(data, r, target) for name, r in ranked.items() if name != PIPELINE}
    table = pl.DataFrame([{"model": encoder.model_id.split("/")[-1], "approach": n,
                           **{k: v for k, v in r.items() if k not in ("dev Brier", "deciles")}}
                          for n, r in rows.items()])  # fmt: skip
    with quality.markdown_tables(fmt_str_lengths=60, tbl_width_chars=300):
        print(f"{encoder.model_id}; {data.products.height} products: dev {int(data.dev.sum())}, test "
              f"{int((~data.dev).sum())} (dev fraction {DEV_FRACTION}); ECE over 10 equal-count bins\n")  # fmt: skip
        print(table)
        for name, r in rows.items():
            print(f"\n{name}: dev Brier (cross-fitted) {r['dev Brier']}; test deciles, predicted -> observed:")
            print(pl.DataFrame(list(r["deciles"])).with_columns(pl.all().exclude("products").round(3)))
        print(pipeline_coverage(data, ranked[PIPELINE]), "\n")
        if holdout is not None:
            print(
                f"{encoder.model_id}: repeated holdout, {splits} random 80/20 splits, held-out rows pooled; "
                "deciles predicted/observed:"
            )
            print(holdout.drop("deciles", *(f"perfect within 0.07 at {n}" for n in GOAL_ROWS)))
            print(
                "how often a perfectly calibrated confidence keeps every decile within 0.07, at "
                + " / ".join(map(str, GOAL_ROWS))
                + " products:"
            )
            for row in holdout.iter_rows(named=True):
                print(
                    f"{row['approach']}: " + " / ".join(f"{row[f'perfect within 0.07 at {n}']:.2f}" for n in GOAL_ROWS)
                )
            for name, bins in holdout.select("approach", "deciles").iter_rows():
                print(f"{name}: {bins}")
            print()
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sample = quality.SHARED / "shopify-product-catalogue-sample" / "sample.jsonl"
    parser.add_argument("--models", type=quality.model_list, default=None, help="comma-separated catalogue ids")
    parser.add_argument("--products", type=Path, default=sample)
    parser.add_argument("--taxonomy", type=Path, default=quality.SHARED / "shopify-taxonomy" / "categories.txt")
    parser.add_argument("--cache", type=Path, default=quality.ROOT / ".cache" / "quality", help=".npz per model")
    parser.add_argument("--target", type=float, default=0.9, help="target precision of the review threshold")
    parser.add_argument("--splits", type=int, default=20, help="random 80/20 splits of the repeated holdout (0: none)")
    args = parser.parse_args(argv)
    data = quality.load(args.products, args.taxonomy)
    tables = [report(data, quality.Encoder(m, quality.cache_file(args.cache, m)), args.target, args.splits)
              for m in args.models or quality.default_models()]  # fmt: skip
    if len(tables) > 1:
        with quality.markdown_tables(fmt_str_lengths=60, tbl_width_chars=300):
            print("every model:", pl.concat(tables).select(~cs.starts_with("test ECE ")), sep="\n")


if __name__ == "__main__":
    main()

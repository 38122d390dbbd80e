"""The feedback loop (issue 20, item 4): does correcting the head of the review queue make label transfer
better on the products nobody corrected?

    uv run python bench/feedback.py [--share 0.1] [--target 0.9] [--work DIR]

On the shared sample, split by the evaluation protocol (taxo_pipeline/evaluation/protocol.py): the
development part is the labelled evaluation set (TAXO_PRODUCTS), the test part, its labels removed, is a
catalogue the evaluation never saw. In a temporary workspace, against one local SIE server serving the real
all-MiniLM-L6-v2:
1. evaluate label transfer (data assets, then label_transfer_predictions and _metrics: the calibration);
2. `classify-products` the catalogue with label transfer and `--target-precision`; the `review_queue` view
   lists the flagged products, most useful first;
3. correct the first `--share` of the catalogue's products in that queue with their true labels (a
   corrections file with their texts, TAXO_CORRECTIONS), evaluate label transfer again (its pool and
   calibration now include them) and classify the catalogue again;
4. print precision at coverage (exact L3, L2, L1) before and after on the products nobody corrected: the
   products ranked by their confidence in each run, the most confident tenth, fifth ... all of them.
With --look-alikes the catalogue holds each test product three times (title and description, title only,
description only), as catalogues hold near-duplicates: a corrected row's look-alikes are among the rest.
A corrected product itself keeps its reviewed label in the second run (classification/reviewer_labels.py).
Nothing is tuned: label transfer runs with the settings chosen on the dev part for issue 13, the queue's
order and the share are fixed beforehand, and no test label is read except the corrected products'.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from taxo_pipeline.classification.coverage import LEVELS, correct_by_level, coverage_table
from taxo_pipeline.dataset.cleaning import clean_products
from taxo_pipeline.dataset.products import read_products
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, parse_categories
from taxo_pipeline.dataset.trimming import trim_products
from taxo_pipeline.evaluation.protocol import DEV, split_mask

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = ROOT.parent / "shared" / "data" / "shopify-taxonomy" / "categories.txt"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["product_id", "product_title", "product_description"]
COVERAGES = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
log = logging.getLogger("bench.feedback")


def look_alikes(products: pl.DataFrame) -> pl.DataFrame:
    """Each product three times, as a catalogue holds near-duplicates: title and description (id `<id>-td`),
    title only (`-t`), description only (`-d`); a row left without text is dropped."""
    variants = [products.with_columns(pl.col("product_id") + suffix, *blank)
                for suffix, blank in (("-td", ()), ("-t", (pl.lit("").alias("product_description"),)),
                                      ("-d", (pl.lit("").alias("product_title"),)))]  # fmt: skip
    rows = pl.concat(variants)
    return rows.filter((pl.col("product_title").str.strip_chars() != "") | (pl.col("product_description").str.strip_chars() != ""))


def split(work: Path, copies: bool) -> tuple[Path, Path, dict[str, str]]:
    """The labelled evaluation file (dev part), the catalogue (test part, no labels; each product three
    times with `copies`) and its true labels."""
    categories = parse_categories(TAXONOMY)
    clean, _ = clean_products(read_products(SAMPLE), categories)
    products = trim_products(clean, TrimmedTaxonomy.from_categories(categories))
    dev = pl.Series(split_mask(products["product_id"].to_list(), DEV))
    labelled, catalogue = work / "labelled.jsonl", work / "catalogue.parquet"
    products.filter(dev).select(*TEXTS, "ground_truth_category").write_ndjson(labelled)
    held_out = products.filter(~dev).select(*TEXTS, "ground_truth_category")
    held_out = look_alikes(held_out) if copies else held_out
    held_out.select(TEXTS).write_parquet(catalogue)
    return labelled, catalogue, dict(held_out.select("product_id", "ground_truth_category").iter_rows())


def evaluate_label_transfer() -> str:
    """The data assets and label transfer's predictions and metrics for MiniLM, in-process, as the automation
    would run them (a fresh ephemeral instance: everything selected runs); the vote weight each fold chose."""
    import dagster as dg

    from taxo_pipeline.definitions import defs
    from taxo_pipeline.defs.resources import pipeline_resources

    selection = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth",
                 "products_experiment", "label_transfer_predictions", "label_transfer_metrics"]  # fmt: skip
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("encoder_model", [MODEL])
    result = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, instance=instance,
                            partition_key=MODEL, resources=pipeline_resources())  # fmt: skip
    assert result.success
    (predictions,) = result.asset_materializations_for_node("label_transfer_predictions")
    return predictions.metadata["vote_weight_per_fold"].value


def classify(catalogue: Path, target: float, output: Path) -> pl.DataFrame:
    command = [str(Path(sys.executable).parent / "classify-products"), "--products", str(catalogue), "--approach",
               "label-transfer", "--model", MODEL, "--target-precision", str(target), "--output", str(output)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True)
    return pl.read_parquet(output).select("product_id", "category", "confidence", "needs_review")


def review_queue(warehouse: Path) -> list[str]:
    """The catalogue's products in the review_queue view's order (the last classification's)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT product_id FROM review_queue WHERE approach = 'label-transfer' "
                           "ORDER BY confidence ASC NULLS FIRST, category_products DESC, product_id").fetchall()  # the view's order
    return [row[0] for row in rows]


def at_coverages(rows: pl.DataFrame, truths: dict[str, str]) -> dict[float, dict]:
    """Precision per level of the most confident share of `rows`, for each share in COVERAGES."""
    correct = correct_by_level(rows["category"].to_list(), [truths[p] for p in rows["product_id"]])
    table = coverage_table(rows["confidence"].fill_null(0.0).to_numpy(), correct)
    return {share: next(r for r in table if r["coverage"] >= share - 1e-9) for share in COVERAGES}


def report(before: pl.DataFrame, after: pl.DataFrame, truths: dict[str, str], corrected: set[str], target: float) -> str:
    kept = {p for p in truths if p not in corrected}
    rows = {name: frame.filter(pl.col("product_id").is_in(kept)) for name, frame in (("before", before), ("after", after))}
    figures = {name: at_coverages(frame, truths) for name, frame in rows.items()}
    lines = [f"| coverage | products | {' | '.join(f'precision {lv} before / after' for lv in reversed(LEVELS))} |",
             "|---|---|" + "---|" * len(LEVELS)]  # fmt: skip
    for share in COVERAGES:
        b, a = figures["before"][share], figures["after"][share]
        cells = [f"{b[f'precision_{lv}']:.3f} / {a[f'precision_{lv}']:.3f}" for lv in reversed(LEVELS)]
        lines.append(f"| {share:.1f} | {b['products']} / {a['products']} | {' | '.join(cells)} |")
    review = {name: f"{frame['needs_review'].mean():.3f}" for name, frame in rows.items()}
    lines.append(f"\nshare flagged needs_review at target {target} (uncorrected products): before {review['before']}, "
                 f"after {review['after']}")  # fmt: skip
    changed = int((rows["before"].sort("product_id")["category"] != rows["after"].sort("product_id")["category"]).sum())
    lines.append(f"uncorrected products whose top category changed: {changed} of {len(kept)}")
    return "\n".join(lines)


def correction_votes(url: str, labelled: Path, catalogue: Path, corrected: list[str]) -> str:
    """Why the rest moves or not: the share of each uncorrected product's neighbour vote (its 10 nearest in the
    labelled pool, softmax at the pipeline's temperature) that comes from the corrected products."""
    from taxo_pipeline.retrieval.exact_search import normalise
    from taxo_pipeline.retrieval.neighbour_votes import neighbour_votes
    from taxo_pipeline.retrieval.queries import title_and_description_queries
    from taxo_pipeline.sie.client import InferenceClient
    from taxo_pipeline.workspace import Workspace

    products = pl.read_parquet(catalogue)
    pool = pl.concat([pl.read_ndjson(labelled).select(TEXTS), products.filter(pl.col("product_id").is_in(corrected))])
    rest = products.filter(~pl.col("product_id").is_in(corrected))
    with InferenceClient(url, Workspace.from_env().sie) as client:
        vectors = [normalise(client.encode(MODEL, title_and_description_queries(f["product_title"].to_list(),
                   f["product_description"].to_list()), is_query=True)) for f in (pool, rest)]  # fmt: skip
    from_corrections = np.arange(pool.height) >= pool.height - len(corrected)
    share = neighbour_votes(vectors[1] @ vectors[0].T, from_corrections.astype(np.int64), 2).votes[:, 1]
    return (f"corrected products among an uncorrected product's 10 nearest pool neighbours: {int((share > 0).sum())} of "
            f"{rest.height} products; their share of its vote: mean {share.mean():.3f}, largest {share.max():.3f}, "
            f"above 0.5 for {int((share > 0.5).sum())}")  # fmt: skip


def corrections_file(path: Path, catalogue: Path, corrected: list[str], truths: dict[str, str]) -> Path:
    texts = pl.read_parquet(catalogue).filter(pl.col("product_id").is_in(corrected))
    texts.with_columns(pl.col("product_id").replace_strict(truths).alias("category")).select(
        "product_id", "category", "product_title", "product_description").write_csv(path)  # fmt: skip
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, default=0.1, help="share of the catalogue corrected (head of the queue)")
    parser.add_argument("--target", type=float, default=0.9, help="the review threshold's target precision")
    parser.add_argument("--work", type=Path, help="workspace (default: a new temporary folder)")
    parser.add_argument("--look-alikes", action="store_true",
                        help="the catalogue holds each test product three times (title and description, title only, "
                             "description only), so a correction has near-duplicates to vote for")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from taxo_pipeline.sie.server import ensure_sie
    from taxo_pipeline.workspace import Workspace

    work = args.work or Path(tempfile.mkdtemp(prefix="taxo-feedback-"))
    work.mkdir(parents=True, exist_ok=True)
    labelled, catalogue, truths = split(work, args.look_alikes)
    os.environ.update({"TAXO_DATA_DIR": str(work / "data"), "TAXO_WAREHOUSE": str(work / "warehouse.duckdb"),
                       "TAXO_INDEX_DIR": str(work / "chroma"), "DAGSTER_HOME": str(work / "dagster"),
                       "TAXO_PRODUCTS": str(labelled), "TAXO_TAXONOMY": str(TAXONOMY)})  # fmt: skip
    os.environ.pop("TAXO_CORRECTIONS", None)
    (work / "dagster").mkdir(exist_ok=True)
    workspace = Workspace.from_env()
    with ensure_sie(workspace.sie, workspace.data_dir, workspace.settings.models, [MODEL], logger=log) as url:
        os.environ["SIE_BASE_URL"] = url
        weights = [evaluate_label_transfer()]
        before = classify(catalogue, args.target, work / "before.parquet")
        count = math.ceil(args.share * len(truths))
        corrected = review_queue(work / "warehouse.duckdb")[:count]
        os.environ["TAXO_CORRECTIONS"] = str(corrections_file(work / "corrections.csv", catalogue, corrected, truths))
        weights.append(evaluate_label_transfer())
        after = classify(catalogue, args.target, work / "after.parquet")
        votes = correction_votes(url, labelled, catalogue, corrected)
    print(f"{MODEL}, label transfer (full-depth): labelled pool {sum(1 for _ in labelled.open())} dev products; catalogue "
          f"{len(truths)} test products; corrected the first {len(corrected)} of the review queue ({args.share:.0%}), "
          f"precision at coverage on the other {len(truths) - len(corrected)}:\n")  # fmt: skip
    print(report(before, after, truths, set(corrected), args.target))
    print(votes)
    for name, table in zip(("before", "after"), weights, strict=True):
        print(f"\nvote weight per fold, chosen by cross-validation on the labelled products ({name}):\n{table}")
    print(f"\nwork folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

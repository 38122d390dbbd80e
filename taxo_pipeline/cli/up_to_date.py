"""Which runs of the main job can be skipped: those whose inputs did not change since they last ran.

Each run the main job launches carries a signature tag: a hash of everything its results depend on
(source file contents, asset code versions, the fingerprints of the models it calls, the partition).
A run is up to date when the latest materialization of every asset it selects, for its partition,
came from a run with the same signature; materializations from elsewhere (the UI, the automation)
carry none, so the main job runs those partitions again rather than trust them.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import dagster as dg

from taxo_pipeline.files import file_sha256

SIGNATURE_TAG = "taxo/signature"


def signature(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def data_signature(sources: Mapping[str, Path], code_versions: Mapping[str, str | None]) -> str:
    """The data assets' signature: their source files' contents and every asset's code version."""
    return signature(sources={name: file_sha256(path) for name, path in sources.items()}, code=code_versions)


def code_versions(asset_graph) -> dict[str, str | None]:
    """Every materializable asset's code version (a change anywhere may change any result)."""
    return {key.to_user_string(): asset_graph.get(key).code_version for key in asset_graph.materializable_asset_keys}


def is_up_to_date(instance: dg.DagsterInstance, selection: Iterable[str], partition_key: str | None, tag: str) -> bool:
    for asset in selection:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition_key] if partition_key else None),
            limit=1,
        ).records
        if not records:
            return False
        run = instance.get_run_by_id(records[0].run_id)
        if run is None or run.tags.get(SIGNATURE_TAG) != tag:
            return False
    return True

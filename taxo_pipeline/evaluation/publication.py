"""What readers see of the evaluation: the last *whole* result, never a rerun half-way.

Whether the working results are whole depends on what the pipeline runs now: the registered approaches,
the enabled models and the fingerprints of their settings (the catalogue's). This module works those out;
warehouse/publication.py judges the stored results against them and copies them for readers, and
warehouse/views.py refreshes the views on the copies.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from taxo_pipeline.sie.model_catalogue import Catalogue, CatalogueError, fingerprint
from taxo_pipeline.warehouse import publication, views
from taxo_pipeline.warehouse.embedding_cache import UNKNOWN_FINGERPRINT
from taxo_pipeline.warehouse.publication import Live
from taxo_pipeline.warehouse.store import Warehouse


def settings_fingerprint(catalogue: Catalogue, model: str, reranker: str | None = None) -> str:
    """The fingerprint of the model settings a result of (model, reranker) is computed with: the model's
    catalogue fingerprint, then the reranker's after a `+`; a model outside the catalogue (one only a
    remote server knows) has the empty fingerprint, as in the embedding cache. Cheap: weight files are
    hashed again only when their size or mtime changed."""
    known = {spec.id: spec for spec in catalogue}

    def one(model_id: str) -> str:
        return fingerprint(known[model_id]) if model_id in known else UNKNOWN_FINGERPRINT

    return one(model) if reranker is None else f"{one(model)}+{one(reranker)}"


def live(catalogue: Catalogue, registered: Iterable[str] | None = None) -> Live:
    """What the pipeline runs now: `registered` approaches (None: the built-in ones) with the catalogue's
    enabled models, and their settings fingerprints (None where one cannot be computed: a weights package
    not installed, so no run of that model completes either)."""
    if registered is None:
        from taxo_pipeline.approaches.registry import approaches  # the registry imports every approach

        registered = [a.name for a in approaches()]

    def current(model: str, reranker: str | None) -> str | None:
        try:
            return settings_fingerprint(catalogue, model, reranker)
        except CatalogueError:
            return None

    return Live(frozenset(registered), frozenset(spec.id for spec in catalogue.enabled()), current)


def publish_if_whole(warehouse: Warehouse, catalogue: Catalogue) -> bool:
    """Publish the working results if they are whole, in one transaction; returns whether it did."""
    return publication.publish_if_whole(warehouse, live(catalogue))


def refresh_views(warehouse: Warehouse, catalogue: Catalogue, registered: Iterable[str] | None = None) -> bool:
    """Rewrite the `models` table from the catalogue, publish the results if they are whole and (re)create
    every view, in one transaction (warehouse/views.py). `registered`: the approaches' names (None: the
    built-in ones). Returns whether the results were published."""
    models = pa.table(
        {
            "id": [spec.id for spec in catalogue],
            "family": [spec.family for spec in catalogue],
            "size": [spec.size for spec in catalogue],
            "enabled": [spec.enabled for spec in catalogue],
        }
    )
    return views.refresh_views(warehouse, models, live(catalogue, registered))

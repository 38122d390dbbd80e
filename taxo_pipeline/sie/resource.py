"""The Dagster face of the SIE layer: where the server is, and a client bound to the warehouse cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from taxo_pipeline.resources import StorageResource
from taxo_pipeline.sie.client import DEFAULT_BATCH_SIZE, InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.server import ensure_sie, remote_url


class SIEResource(dg.ConfigurableResource):
    """An SIE server for the run: `base_url`, else SIE_BASE_URL, else a local server for the enabled models.

    The embedding cache lives in `storage`'s warehouse (a nested resource: pass the same
    StorageResource the assets get). The local server lives as long as the execution that
    initialised this resource (one run in-process, or one step with the multiprocess executor).
    Timeouts left unset follow TAXO_SIE_TIMEOUT_S, TAXO_SIE_CONNECT_TIMEOUT_S and
    TAXO_SIE_PROVISION_TIMEOUT_S at run time. Pass the key as `dg.EnvVar("SIE_API_KEY")`, never as
    a literal; unset, SIE_API_KEY is read at run time.
    """

    storage: StorageResource
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    batch_size: int = DEFAULT_BATCH_SIZE
    timeout_s: float | None = None
    connect_timeout_s: float | None = None
    provision_timeout_s: float | None = None

    _url: str | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[SIEResource]:
        with ensure_sie(base_url=self.base_url, logger=context.log) as url:
            self._url = url
            yield self

    def client(self, logger: Any = None, store_vectors: bool = True) -> InferenceClient:
        """A client with the warehouse embedding cache (looked up only, without `store_vectors`); pass
        context.log for progress in the UI."""
        url = self._url or remote_url(self.base_url)
        if not url:
            raise RuntimeError("SIEResource used outside a Dagster execution and without base_url or SIE_BASE_URL")
        return InferenceClient(
            url,
            api_key=self.api_key or None,
            batch_size=self.batch_size,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            provision_timeout_s=self.provision_timeout_s,
            cache=EmbeddingCache(self.storage.warehouse(), read_only=not store_vectors),
            logger=logger,
        )


def pipeline_resources(storage: StorageResource | None = None, sie_url: str | None = None) -> dict[str, Any]:
    """`storage` and `sie` for Definitions and dg.materialize: one StorageResource, which the SIE
    resource's embedding cache shares, so the warehouse is declared once."""
    storage = storage or StorageResource()
    return {"storage": storage, "sie": SIEResource(storage=storage, base_url=sie_url)}

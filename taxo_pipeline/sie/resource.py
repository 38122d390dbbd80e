"""The Dagster face of the SIE layer: where the server is, and a client bound to the warehouse cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from taxo_pipeline import settings
from taxo_pipeline.sie.client import DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT_S, InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.local_server import ensure_sie
from taxo_pipeline.warehouse import Warehouse


class SIEResource(dg.ConfigurableResource):
    """An SIE server for the run: `base_url`, else SIE_BASE_URL, else a local server for the enabled models.

    The local server lives as long as the execution that initialised this resource (one run
    in-process, or one step with the multiprocess executor). Pass the key as
    `dg.EnvVar("SIE_API_KEY")`, never as a literal; unset, SIE_API_KEY is read at run time.
    """

    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    batch_size: int = DEFAULT_BATCH_SIZE
    timeout_s: float = DEFAULT_TIMEOUT_S
    warehouse_path: str | None = None

    _url: str | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[SIEResource]:
        with ensure_sie(base_url=self.base_url, logger=context.log) as url:
            self._url = url
            yield self

    def client(self, logger: Any = None) -> InferenceClient:
        """A client with the warehouse embedding cache; pass context.log for progress in the UI."""
        url = self._url or self.base_url or os.environ.get("SIE_BASE_URL")
        if not url:
            raise RuntimeError("SIEResource used outside a Dagster execution and without base_url or SIE_BASE_URL")
        return InferenceClient(
            url,
            api_key=self.api_key or None,
            batch_size=self.batch_size,
            timeout_s=self.timeout_s,
            cache=EmbeddingCache(Warehouse(self.warehouse_path or settings.warehouse_path())),
            logger=logger,
        )

"""The resources every asset shares, declared once: the workspace (the settings, the warehouse and the
folders, as a `Workspace` the assets hand down) and the SIE server with a client bound to the warehouse's
embedding cache. The variables a deployment sets are `dg.EnvVar` fields, so the UI shows where each value
comes from; the rest of the settings come from the environment when the workspace is built."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from taxo_pipeline import settings
from taxo_pipeline.sie.client import DEFAULT_BATCH_SIZE, InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.sie.server import ensure_sie, remote_url
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline.workspace import Workspace

# The workspace's fields and the variables that set them.
WORKSPACE_VARIABLES = {"warehouse_path": "TAXO_WAREHOUSE", "data_dir": "TAXO_DATA_DIR", "index_dir": "TAXO_INDEX_DIR"}


class WorkspaceResource(dg.ConfigurableResource):
    """The assets' Workspace: the settings of the environment, with this resource's warehouse and folders
    (unset: the variables' defaults)."""

    warehouse_path: str | None = None
    data_dir: str | None = None
    index_dir: str | None = None

    def workspace(self) -> Workspace:
        return Workspace.from_env().with_paths(self.warehouse_path, self.data_dir, self.index_dir)

    def warehouse(self) -> Warehouse:
        return self.workspace().warehouse

    def data_path(self, name: str) -> Path:
        return self.workspace().data_path(name)

    def index_path(self) -> Path:
        return self.workspace().index_dir


class SIEResource(dg.ConfigurableResource):
    """An SIE server for the run: `base_url`, else SIE_BASE_URL, else a local server for the enabled models.

    The embedding cache lives in `storage`'s warehouse (a nested resource: pass the same
    WorkspaceResource the assets get). The local server lives as long as the execution that
    initialised this resource (one run in-process, or one step with the multiprocess executor).
    Timeouts left unset follow TAXO_SIE_TIMEOUT_S, TAXO_SIE_CONNECT_TIMEOUT_S and
    TAXO_SIE_PROVISION_TIMEOUT_S at run time (`storage`'s workspace, as the server and the catalogue do).
    Pass the key as `dg.EnvVar("SIE_API_KEY")`, never as a literal; unset, SIE_API_KEY is read at run time.
    """

    storage: WorkspaceResource
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    batch_size: int = DEFAULT_BATCH_SIZE
    timeout_s: float | None = None
    connect_timeout_s: float | None = None
    provision_timeout_s: float | None = None

    _url: str | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[SIEResource]:
        workspace = self.storage.workspace()
        with ensure_sie(workspace.sie, workspace.data_dir, workspace.settings.models, base_url=self.base_url,
                        logger=context.log) as url:  # fmt: skip
            self._url = url
            yield self

    def client(self, logger: Any = None, store_vectors: bool = True) -> InferenceClient:
        """A client with the warehouse embedding cache (looked up only, without `store_vectors`); pass
        context.log for progress in the UI."""
        workspace = self.storage.workspace()
        url = self._url or remote_url(workspace.sie, self.base_url)
        if not url:
            raise RuntimeError("SIEResource used outside a Dagster execution and without base_url or SIE_BASE_URL")
        return InferenceClient(
            url,
            workspace.sie,
            api_key=self.api_key or None,
            batch_size=self.batch_size,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            provision_timeout_s=self.provision_timeout_s,
            cache=EmbeddingCache(workspace.warehouse, load_catalogue(workspace.settings.models), read_only=not store_vectors),
            logger=logger,
        )


def pipeline_resources(storage: WorkspaceResource | None = None, sie_url: str | None = None) -> dict[str, Any]:
    """`storage` and `sie` for Definitions and dg.materialize: one WorkspaceResource, which the SIE
    resource's embedding cache shares, so the warehouse is declared once."""
    storage = storage or WorkspaceResource()
    return {"storage": storage, "sie": SIEResource(storage=storage, base_url=sie_url)}


def workspace_resource() -> WorkspaceResource:
    """The resource as a deployment declares it: a `dg.EnvVar` for each of its variables that is set."""
    given = settings.given(WORKSPACE_VARIABLES.values())
    return WorkspaceResource(**{field: dg.EnvVar(var) for field, var in WORKSPACE_VARIABLES.items() if var in given})


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=pipeline_resources(workspace_resource()))

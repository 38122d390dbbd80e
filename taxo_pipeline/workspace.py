"""The workspace a command, the service or a Dagster step works in: the settings, and the warehouse, folders
and file names they name. Each front door (the CLI, the service's start, the Dagster definitions and
resources) builds one, once; everything below it receives it, or the part it needs (`sie`), as a
parameter and never reads the environment itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from taxo_pipeline import settings
from taxo_pipeline.dataset.taxonomy import Depth
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.warehouse.store import Warehouse


@dataclass(frozen=True)
class Workspace:
    settings: settings.Settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Workspace:
        return cls(settings.Settings.from_env(environ))

    def with_paths(self, warehouse: str | Path | None = None, data_dir: str | Path | None = None,
                   index_dir: str | Path | None = None) -> Workspace:  # fmt: skip
        """This workspace with the warehouse and folders given (None: as they are); the index follows
        a new data folder unless given, as TAXO_INDEX_DIR's default does."""
        given = {"warehouse": warehouse, "data_dir": data_dir, "index_dir": index_dir}
        changes = {name: Path(value) for name, value in given.items() if value is not None}
        if data_dir is not None and index_dir is None and self.settings.index_dir == self.settings.data_dir / "chroma":
            changes["index_dir"] = Path(data_dir) / "chroma"
        return Workspace(replace(self.settings, **changes)) if changes else self

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def index_dir(self) -> Path:
        return self.settings.index_dir

    @property
    def depth(self) -> Depth:
        return self.settings.depth

    @property
    def sie(self) -> SIESettings:
        return self.settings.sie

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.settings.warehouse)

    def data_path(self, name: str) -> Path:
        return self.settings.data_dir / name

    @property
    def taxonomy_path(self) -> Path:
        """The taxonomy at the workspace's depth (shopify-taxonomy-l3.parquet at depth 3, -full, -l5 ...)."""
        return self.data_path(settings.taxonomy_file(self.depth))

    @property
    def experiment_path(self) -> Path:
        """The evaluation table at the workspace's depth."""
        return self.data_path(settings.experiment_file(self.depth))

    @property
    def full_taxonomy_path(self) -> Path:
        return self.data_path(settings.TAXONOMY_FULL_DEPTH_FILE)

"""Dagster resources shared by every asset, declared once."""

from pathlib import Path

import dagster as dg

from taxo_pipeline import settings
from taxo_pipeline.warehouse import Warehouse


class StorageResource(dg.ConfigurableResource):
    """Where tables and files go. Unset fields follow TAXO_WAREHOUSE, TAXO_DATA_DIR and
    TAXO_INDEX_DIR at run time."""

    warehouse_path: str | None = None
    data_dir: str | None = None
    index_dir: str | None = None

    def warehouse(self) -> Warehouse:
        return Warehouse(self.warehouse_path or settings.current().warehouse)

    def data_path(self, name: str) -> Path:
        return Path(self.data_dir or settings.current().data_dir) / name

    def index_path(self) -> Path:
        return Path(self.index_dir or settings.current().index_dir)

"""The Dagster code location: every asset, check, sensor and resource of taxo-pipeline."""

import dagster as dg

from taxo_pipeline.assets import category_index, checks, dataset, text_retrieval
from taxo_pipeline.assets.sensors import model_partitions_sensor
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.sie.resource import SIEResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([dataset, category_index, text_retrieval]),
    asset_checks=checks.checks,
    sensors=[model_partitions_sensor],
    resources={"storage": StorageResource(), "sie": SIEResource()},
)

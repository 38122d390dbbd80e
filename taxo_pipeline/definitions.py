"""The Dagster code location: every asset, check and resource of taxo-pipeline."""

import dagster as dg

from taxo_pipeline.assets import checks, dataset
from taxo_pipeline.resources import StorageResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([dataset]),
    asset_checks=checks.checks,
    resources={"storage": StorageResource()},
)

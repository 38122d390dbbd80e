"""The Dagster code location: every asset, check, job, sensor, schedule and resource of taxo-pipeline."""

import dagster as dg

from taxo_pipeline.assets import (
    category_index,
    checks,
    dataset,
    image_retrieval,
    improved_retrieval,
    nli,
    reranking,
    text_retrieval,
)
from taxo_pipeline.assets.automation import AUTOMATION, automation_sensor, weekly_evaluation
from taxo_pipeline.assets.jobs import jobs
from taxo_pipeline.assets.model_fingerprints import FINGERPRINT_SOURCES
from taxo_pipeline.assets.sensors import model_partitions_sensor
from taxo_pipeline.sie.resource import pipeline_resources

defs = dg.Definitions(
    assets=[
        *FINGERPRINT_SOURCES.values(),
        *dg.load_assets_from_modules(
            [dataset, category_index, text_retrieval, image_retrieval, nli, reranking, improved_retrieval],
            automation_condition=AUTOMATION,
        ),
    ],
    asset_checks=checks.checks,
    jobs=jobs,
    schedules=[weekly_evaluation],
    sensors=[model_partitions_sensor, automation_sensor],
    resources=pipeline_resources(),
)

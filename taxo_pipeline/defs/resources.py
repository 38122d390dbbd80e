"""The resources every asset shares, declared once."""

import dagster as dg

from taxo_pipeline.sie.resource import pipeline_resources


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=pipeline_resources())

"""The resources every asset shares, declared once."""

import dagster as dg

from taxo_pipeline.resources import StorageResource
from taxo_pipeline.sie.resource import SIEResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"storage": StorageResource(), "sie": SIEResource()})

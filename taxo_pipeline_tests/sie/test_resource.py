"""SIEResource in a real Dagster run, against the session SIE server."""

import dagster as dg
import numpy as np

from taxo_pipeline import settings
from taxo_pipeline.sie.embedding_cache import EmbeddingCache, input_sha256
from taxo_pipeline.sie.resource import SIEResource
from taxo_pipeline.warehouse import Warehouse
from taxo_pipeline_tests.sie.sie_testkit import MINILM

SECRET = "sk-test-resource-7777"


@dg.asset
def hat_vector(context: dg.AssetExecutionContext, sie: SIEResource) -> dg.MaterializeResult:
    client = sie.client(context.log)
    vectors = client.encode(MINILM, ["Straw hat", "Dome tent"])
    return dg.MaterializeResult(
        metadata={"dim": vectors.shape[1], "norm": float(np.linalg.norm(vectors[0])), "requests": client.request_count}
    )


def test_resource_serves_an_asset_and_fills_the_warehouse_cache(sie_env, monkeypatch):
    monkeypatch.setenv("SIE_API_KEY", SECRET)
    resource = SIEResource(api_key=dg.EnvVar("SIE_API_KEY"), batch_size=1)
    result = dg.materialize([hat_vector], resources={"sie": resource})
    assert result.success
    metadata = result.asset_materializations_for_node("hat_vector")[0].metadata
    assert metadata["dim"].value == 384 and metadata["requests"].value == 2
    assert abs(metadata["norm"].value - 1.0) < 1e-4
    cached = EmbeddingCache(Warehouse(settings.warehouse_path())).lookup(MINILM, False, [input_sha256("Straw hat")])
    assert len(cached) == 1

    # A second run is served from the cache; the key shows nowhere.
    again = dg.materialize([hat_vector], resources={"sie": resource})
    assert again.asset_materializations_for_node("hat_vector")[0].metadata["requests"].value == 0
    shown = [repr(resource), str(resource), repr(SIEResource(base_url=sie_env, api_key=SECRET))]
    shown += [str(event) for event in again.all_events]
    assert all(SECRET not in text for text in shown)

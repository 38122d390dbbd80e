"""SIEResource in a real Dagster run, against the session SIE server."""

import dagster as dg
import numpy as np

from taxo_pipeline import settings
from taxo_pipeline.defs.resources import SIEResource, WorkspaceResource, pipeline_resources
from taxo_pipeline.sie.embedding_cache import EmbeddingCache, input_sha256
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.warehouse.store import Warehouse
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
    resource = SIEResource(storage=WorkspaceResource(), api_key=dg.EnvVar("SIE_API_KEY"), batch_size=1)
    result = dg.materialize([hat_vector], resources={"sie": resource})
    assert result.success
    metadata = result.asset_materializations_for_node("hat_vector")[0].metadata
    assert metadata["dim"].value == 384 and metadata["requests"].value == 2
    assert abs(metadata["norm"].value - 1.0) < 1e-4
    cache = EmbeddingCache(Warehouse(settings.current().warehouse), load_catalogue(settings.current().models))
    cached = cache.lookup(MINILM, False, [input_sha256("Straw hat")])
    assert len(cached) == 1

    # A second run is served from the cache; the key shows nowhere.
    again = dg.materialize([hat_vector], resources={"sie": resource})
    assert again.asset_materializations_for_node("hat_vector")[0].metadata["requests"].value == 0
    shown = [
        repr(resource),
        str(resource),
        repr(SIEResource(storage=WorkspaceResource(), base_url=sie_env, api_key=SECRET)),
    ]
    shown += [str(event) for event in again.all_events]
    assert all(SECRET not in text for text in shown)


def test_the_cache_lives_in_the_warehouse_of_the_storage_resource(sie_env, tmp_path):
    storage = WorkspaceResource(warehouse_path=str(tmp_path / "elsewhere" / "taxo.duckdb"))
    result = dg.materialize([hat_vector], resources=pipeline_resources(storage))
    assert result.success
    cache = EmbeddingCache(storage.warehouse(), load_catalogue(settings.current().models))
    assert cache.lookup(MINILM, False, [input_sha256("Straw hat")])
    assert not settings.current().warehouse.exists()  # TAXO_WAREHOUSE was not used


@dg.asset
def unknown_model_vector(context: dg.AssetExecutionContext, sie: SIEResource) -> None:
    sie.client(context.log).encode("nobody/no-such-model", ["Straw hat"])


def test_credentials_in_the_server_url_reach_no_event(sie_env, monkeypatch):
    token = "tok-in-url-5151"
    monkeypatch.setenv("SIE_BASE_URL", sie_env.replace("http://", f"http://user:{token}@"))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([unknown_model_vector], resources=pipeline_resources(), instance=instance, raise_on_error=False)
    assert not result.success
    # The whole event log: log lines (context.log) and every event with its error.
    texts = [f"{entry.user_message} {entry.dagster_event}" for entry in instance.all_logs(result.run_id)]
    shown = sie_env.replace("http://", "http://***@")
    assert any(f"using the SIE server at {shown}" in text for text in texts)
    failure = next(event for event in result.all_events if event.is_step_failure).step_failure_data.error
    while failure.cause is not None:
        failure = failure.cause
    assert f"'nobody/no-such-model' is not served by the SIE server at {shown}" in failure.message
    assert all(token not in text for text in texts)

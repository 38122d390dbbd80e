"""Classifying a user's catalogue in the UI: one partition per shard of the catalogue (`catalogue_shard`),
registered by the sensor that watches TAXO_CATALOGUE or by `classify-products --dagster`; each run
classifies its shard with the plain per-shard function (taxo_pipeline/classification/run.py)."""

"""taxo-pipeline's Dagster definitions, one folder per stage along the data's path:

- ingest/: raw sources -> cleaned full-depth table -> L3 taxonomy and experiment table, their checks,
  and the weekly data refresh;
- models/: model partitions kept in step with the catalogue, and the model fingerprints;
- feedback/: the reviewers' corrections file (TAXO_CORRECTIONS) as an observable source, and its sensor;
- index/: per-model category embeddings (DuckDB + Chroma);
- evaluate/: predictions and metrics of every registered approach, and the evaluation jobs;
- automation.py: what reruns on its own; resources.py: the resources every asset shares.
"""

"""The warehouse: every DuckDB file the pipeline writes, and all the SQL that reads or writes them.

`store` (the files, connections and publishing), `schema` (the schema version and migrations),
`results` (predictions, latencies, metrics, datasets), `calibrations`, `publication` (the published
copies), `views` (the evaluation's views), `classifications` (the catalogue runs' views),
`data_tables` (the checks on the data tables), `embedding_cache` (the cache's own file). The rest of
the package calls these with keys, values and Arrow or Polars tables, and never sees a connection.
"""

"""The catalogue's shards as dynamic partitions, keyed like their files (`00000`, `00001`, ...)."""

import dagster as dg

from taxo_pipeline.classification.shards import shard_key

catalogue_shards = dg.DynamicPartitionsDefinition(name="catalogue_shard")


def shard_keys(shards: int) -> list[str]:
    return [shard_key(index) for index in range(shards)]


def shard_partition_changes(instance: dg.DagsterInstance, shards: int) -> tuple[list[str], list[str]]:
    """(keys to add, keys to delete) so that the partitions are exactly the catalogue's shards."""
    known, wanted = set(instance.get_dynamic_partitions(catalogue_shards.name)), shard_keys(shards)
    return [k for k in wanted if k not in known], sorted(known - set(wanted))


def register_shards(instance: dg.DagsterInstance, shards: int) -> None:
    """Make the partitions the catalogue's shards, from a command (a sensor returns the same changes)."""
    from sqlalchemy.exc import IntegrityError  # imported by the instance's storage, not by loading definitions

    add, remove = shard_partition_changes(instance, shards)
    try:
        instance.add_dynamic_partitions(catalogue_shards.name, add)
    except IntegrityError:  # another process added them first (SQLite storage; Postgres ignores the conflict)
        pass
    for key in remove:
        instance.delete_dynamic_partition(catalogue_shards.name, key)

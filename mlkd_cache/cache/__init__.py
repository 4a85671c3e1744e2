"""The teacher-target cache: HDF5 shards of logits, features and label-wise embeddings per view.

:mod:`.format` defines the schema and the checks, :mod:`.writer` writes shards atomically,
:mod:`.reader` serves random (sample, view) batches through memory maps.
"""

from .format import FORMAT_VERSION, MANIFEST_NAME, CacheSpec, check_request, labels_digest, shard_name
from .reader import TargetCache
from .writer import ShardBuffer, ShardWriter, shard_entry, shard_is_complete, write_manifest, write_shard

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CacheSpec",
    "check_request",
    "labels_digest",
    "shard_name",
    "ShardBuffer",
    "ShardWriter",
    "write_shard",
    "shard_is_complete",
    "shard_entry",
    "write_manifest",
    "TargetCache",
]

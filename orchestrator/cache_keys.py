"""Cache keys of a plan: re-exported here for the orchestrator's callers (see artifacts_schema.keys for
the key recipe and orchestrator.graph for how a plan's stages are keyed)."""

from ltx2.artifacts_schema.keys import WeightFileError, canonical_json, digest, weight_identity

from .graph import plan_keys, stage_key, stage_key_material

__all__ = ["WeightFileError", "canonical_json", "digest", "weight_identity", "plan_keys", "stage_key",
           "stage_key_material"]

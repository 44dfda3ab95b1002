"""Zarr artifact kinds, validation, atomic writes and content hashes (built by the pipeline issue)."""

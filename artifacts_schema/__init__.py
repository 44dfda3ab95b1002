"""Zarr v3 artifacts: the kinds, atomic (and resumable) writes, validated lazy reads, hashes, locks.

Writing (a stage)::

    w = ArtifactWriter(out, "frames", producer=Producer("decode", "1"), cache_key=key,
                       input_keys={"latents": lat.cache_key}, params={"tile": 16})
    w.write_array("video", frames_uint8)            # or create_array + write_frames in time order
    w.finalize(facts={"fps": 24.0, "frame_count": 121, "height": 512, "width": 768})

Resuming (denoise / refine)::

    w = ArtifactWriter(out, "latents", ..., resume=True)
    if w.progress: state = w.load_checkpoint(); start = w.progress.step
    for step in ...: w.checkpoint(step, arrays={"video": v, "audio": a}, facts={"sigma": s, "step": step})
    w.finalize()

Reading::

    art = open_artifact(path, "latents")             # validates; ArtifactError says what and how to fix
    art.read("video", time=(t0, t1))                 # MLX, reads only those latent frames' chunks

Locking (the orchestrator)::

    with ArtifactLock(out, timeout=60): run the stage
"""

from .errors import ArtifactError
from .kinds import KINDS, SCHEMA_NAME, SCHEMA_VERSION, ArraySpec, FactSpec, KindSpec
from .files import lock_path, partial_path
from .locking import ArtifactLock, lock_artifact
from .reader import Artifact, open_artifact
from .records import ArrayRecord, Producer, Progress
from .summary import ArraySummary, ArtifactSummary, summarize
from .writer import ArtifactWriter

__all__ = ["ArtifactError", "KINDS", "SCHEMA_NAME", "SCHEMA_VERSION", "ArraySpec", "FactSpec", "KindSpec",
           "lock_path", "partial_path", "ArtifactLock", "lock_artifact", "Artifact", "open_artifact",
           "ArrayRecord", "Producer", "Progress", "ArraySummary", "ArtifactSummary", "summarize",
           "ArtifactWriter"]

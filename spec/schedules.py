"""The official fixed sigma lists (the LTX2Scheduler's shifted schedule is computed in stages.sampling)."""

from __future__ import annotations

# The distilled model was trained on exactly these noise levels (8 steps); stage 2 (refine after the x2
# upsample) re-enters the same list at 0.909375 and takes its last 3 steps.
DISTILLED_SIGMAS: tuple[float, ...] = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE2_DISTILLED_SIGMAS: tuple[float, ...] = (0.909375, 0.725, 0.421875, 0.0)

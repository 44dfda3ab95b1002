"""The sampling math shared by the denoise and refine stages (no artifact I/O here).

schedules  LTX-2 shifted sigma schedule, distilled sigma lists
patchify   latents <-> token sequences
positions  RoPE position grids (video in pixel space and seconds, audio in seconds)
noise      seeded noise streams (explicit MLX keys) and the noiser
steps      Euler step, clean-token blend
guidance   CFG / STG / modality guidance with rescale, pass planning and batching
res2s      the res_2s second-order sampler step (HQ pipeline)
"""

from ltx2.spec.geometry import (AudioLatentShape, VideoLatentShape, audio_latent_frames, audio_latent_shape,
                                video_latent_shape)
from ltx2.spec.schedules import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS

from .guidance import (AUDIO_GUIDER_DEFAULTS, NO_GUIDANCE, VIDEO_GUIDER_DEFAULTS, GuidancePass, GuiderParams, PassKind,
                       guide, guided_x0, pass_contexts, pass_perturbations, plan_passes, repeat_for_passes,
                       with_stg_blocks)
from .noise import gaussian_noise, noise_key, noise_latent
from .patchify import patchify_audio, patchify_video, unpatchify_audio, unpatchify_video
from .positions import audio_positions, video_positions
from .res2s import res2s_schedule, res2s_step, standardized_noise
from .schedules import distilled_sigmas, ltx2_sigmas, shift_for_tokens
from .steps import blend_clean, euler_step, velocity

__all__ = [
    "AUDIO_GUIDER_DEFAULTS", "NO_GUIDANCE", "VIDEO_GUIDER_DEFAULTS", "GuidancePass", "GuiderParams", "PassKind",
    "guide", "guided_x0", "pass_contexts", "pass_perturbations", "plan_passes", "repeat_for_passes", "with_stg_blocks",
    "gaussian_noise", "noise_key", "noise_latent",
    "patchify_audio", "patchify_video", "unpatchify_audio", "unpatchify_video",
    "audio_positions", "video_positions",
    "DISTILLED_SIGMAS", "STAGE2_DISTILLED_SIGMAS", "distilled_sigmas", "ltx2_sigmas", "shift_for_tokens",
    "AudioLatentShape", "VideoLatentShape", "audio_latent_frames", "audio_latent_shape", "video_latent_shape",
    "blend_clean", "euler_step", "velocity",
    "res2s_schedule", "res2s_step", "standardized_noise",
]

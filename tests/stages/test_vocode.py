"""vocode's planner hooks on an LTX-2.3 checkpoint: the output rate is the bandwidth extension's, and the BWE
generator's activations are counted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from ltx2.models.tiny.configs import AUDIO_VAE
from ltx2.stages import vocode
from ltx2.stages.contract import Progress
from ltx2.stages.registry import StageContext

# the released LTX-2.3 vocoder section: BigVGAN at 16 kHz (hop 160), BWE to 48 kHz (hop 80 at 16 kHz)
LOW = {"upsample_initial_channel": 1536, "resblock": "AMP1", "upsample_rates": [5, 2, 2, 2, 2, 2],
       "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
       "resblock_dilation_sizes": [[1, 3, 5]] * 3, "stereo": True, "use_tanh_at_final": False,
       "activation": "snakebeta", "use_bias_at_final": False}
BWE = {"upsample_initial_channel": 512, "resblock": "AMP1", "upsample_rates": [6, 5, 2, 2, 2],
       "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
       "resblock_dilation_sizes": [[1, 3, 5]] * 3, "stereo": True, "use_tanh_at_final": False,
       "activation": "snakebeta", "use_bias_at_final": False, "apply_final_activation": False,
       "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512,
       "win_size": 512, "num_mels": 64}


@dataclass
class _Latents:
    audio: tuple[int, ...]

    def shape(self, name: str) -> tuple[int, ...]:
        return {"audio": self.audio}[name]


def _context(tmp_path: Path, vocoder: dict, frames: int = 126) -> StageContext:
    path = tmp_path / f"ckpt-{len(vocoder)}.safetensors"
    save_file({"audio_vae.decoder.conv_in.weight": np.zeros((4, 4), np.float32),
               "vocoder.conv_post.weight": np.zeros((2, 8, 7), np.float32)}, str(path),
              metadata={"config": json.dumps({"audio_vae": AUDIO_VAE, "vocoder": vocoder})})
    return StageContext(vocode.STAGE, {"latents": _Latents((1, 8, frames, 16))}, tmp_path / "audio.zarr",
                        vocode.Params(), {"checkpoint": path}, "", None, Progress("vocode", None))


def test_ltx23_vocode_predicts_48khz_and_counts_the_bwe_generator(tmp_path):
    bwe = _context(tmp_path, {"vocoder": LOW, "bwe": BWE})
    out = vocode.predict(bwe)
    n = (4 * 126 - 3) * 480  # every mel frame (10 ms) -> 160 samples at 16 kHz -> 480 at 48 kHz
    assert out.facts["sample_rate"] == 48000 and out.shapes["waveform"] == (2, n)
    # the low-rate generator alone, as a flat vocoder at 16 kHz: the BWE generator's levels are the larger
    alone = _context(tmp_path, dict(LOW, output_sampling_rate=16000))
    assert vocode.predict(alone).facts["sample_rate"] == 16000
    with_bwe, without = vocode.estimate(bwe), vocode.estimate(alone)
    assert with_bwe.activations_bytes == 2 * without.activations_bytes  # 8 frames x 240 x 16 vs 4 x 160 x 24

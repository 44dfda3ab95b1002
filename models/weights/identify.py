"""What a weight file (or folder) is, from its headers alone: ``ltx2 weights check`` and the job's model slots.

Nothing here reads a tensor: a 43 GB checkpoint is described from its safetensors header (names, dtypes,
shapes, byte ranges, config metadata) in milliseconds. :func:`identify` returns a :class:`FileReport`: the kind
of file, its parts with their sizes and the stages that read them, facts worth showing, and problems (truncated
tensors, missing shards or tokenizer, an unexpected layout), and the model version (LTX-2 or LTX-2.3, from the
``model_version`` metadata and the config's switches). :func:`slot_problem` says why a
file does not belong in a job's model slot (an upsampler given as the checkpoint, a truncated download...).

The checkpoint's components and their key prefixes are spec.layout's. Which stage reads what is the stage
registry's, a layer above this one: callers pass it in as ``readers`` (stages.registry.readers_of), asked
with what each part is (its checkpoint key prefixes, or the weight role of the file).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ltx2.models.transformer.config import TransformerConfig
from ltx2.models.upsampler.config import UpsamplerConfig
from ltx2.spec.geometry import TWO_STAGE_SPATIAL_SCALES
from ltx2.spec.layout import (CHECKPOINT_PARTS, CHECKPOINT_PREFIXES, COMPONENTS, GEMMA_LM_PREFIXES, TRANSFORMER,
                              lora_role, nested_prefixes)
from ltx2.spec.versions import VERSIONS

from . import fp8
from .lora import LORA_PREFIX, lora_targets
from .safetensors_file import CheckpointError, SafetensorsHeader, read_header

CHECKPOINT, UPSAMPLER, LORA, GEMMA, GEMMA_SHARD, CONVERTED, UNKNOWN, UNREADABLE = (
    "checkpoint", "latent upsampler", "LoRA", "Gemma folder", "Gemma shard", "converted", "unknown", "unreadable")

TRANSFORMER_PREFIX = TRANSFORMER
CONNECTOR_PREFIXES = nested_prefixes((TRANSFORMER,))  # under the transformer's prefix, not the transformer's
GEMMA_OTHER_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                        "model.multi_modal_projector.", "language_model.lm_head.")
LTX23_TRANSFORMER_FLAGS = ("apply_gated_attention", "cross_attention_adaln", "caption_proj_before_connector",
                           "connector_apply_gated_attention")
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


class Readers(Protocol):
    """The stages that read checkpoint keys under ``prefixes`` or the file of weight role ``role``
    (stages.registry.readers_of)."""

    def __call__(self, *, prefixes: Sequence[str] = (), role: str | None = None) -> tuple[str, ...]: ...


@dataclass
class Part:
    name: str
    tensors: int
    nbytes: int
    dtypes: Counter
    prefixes: tuple[str, ...] = ()  # what it is: the checkpoint keys it holds (or was made from)...
    role: str | None = None  # ...or the weight role of the file it is (gemma, spatial_upsampler, lora.1...)
    readers: tuple[str, ...] = ()  # the stages that read it


def _part(name: str, header: SafetensorsHeader, keys, readers: Readers, *, prefixes: tuple[str, ...] = (),
          role: str | None = None) -> Part:
    """The part ``name`` made of ``keys``, with the stages that read what it is."""
    keys = list(keys)
    return Part(name, len(keys), _bytes(header, keys), _dtypes(header, keys), prefixes, role,
                readers(prefixes=prefixes, role=role) if prefixes or role else ())


@dataclass
class FileReport:
    path: Path
    kind: str
    title: str = ""  # one line: what it is
    size: int = 0
    dtypes: Counter = field(default_factory=Counter)  # stored dtype -> tensor count (fp8 scales included)
    parts: list[Part] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # machine-readable facts (mode, scale, rank, version, ...)

    @property
    def ok(self) -> bool:
        return not self.problems


def gb(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _all_tensors(header: SafetensorsHeader) -> dict:
    return {**header.tensors, **header.companions}


def _bytes(header: SafetensorsHeader, keys) -> int:
    """Stored bytes of ``keys`` with their fp8 scales."""
    total = 0
    for k in keys:
        t = header.tensors[k]
        total += t.nbytes + (t.scale.nbytes if t.scale is not None else 0)
    return total


def _dtypes(header: SafetensorsHeader, keys) -> Counter:
    c = Counter(header.tensors[k].dtype for k in keys)
    c.update(header.tensors[k].scale.dtype for k in keys if header.tensors[k].scale is not None)
    return c


def _truncation(header: SafetensorsHeader) -> str | None:
    cut = header.truncated()
    if not cut:
        return None
    every = _all_tensors(header)
    need = max(t.end for t in every.values())
    return (f"truncated: {len(cut)} of {len(every)} tensors end past the end of the file (it has {header.size:,} "
            f"bytes, its header describes {need:,}), e.g. {cut[0]}; an interrupted download? re-download it")


def _stray_scales(header: SafetensorsHeader) -> list[str]:
    return [k for k in header.tensors if fp8.companion_parent(k) is not None]


# ----------------------------------------------------------------------------- the single-file checkpoint

def _variant(header: SafetensorsHeader) -> tuple[str, str]:
    """(dev | distilled | unknown, how it was decided)."""
    for k, v in header.metadata.items():
        if k == "config":
            continue
        text = f"{k} {v}".lower()
        if "distill" in text:
            return "distilled", f"header metadata {k!r}"
    name = header.path.name.lower()
    if "distill" in name:
        return "distilled", "file name only: the header does not say"
    if re.search(r"(^|[-_.])dev([-_.]|$)", name):
        return "dev", "file name only: the header does not say"
    return "unknown", "neither the header nor the file name says"


def _ltx23_options(cfg: dict) -> list[str]:
    """The LTX-2.3 switches a checkpoint config turns on (empty for an LTX-2 config)."""
    t = cfg.get("transformer") if isinstance(cfg.get("transformer"), dict) else {}
    found = [f"{k}={t[k]!r}" for k in LTX23_TRANSFORMER_FLAGS if t.get(k)]
    voc = cfg.get("vocoder") if isinstance(cfg.get("vocoder"), dict) else {}
    if "bwe" in voc:
        found.append("vocoder.bwe (bandwidth-extension vocoder)")
    return found


# what a file name says of the model it belongs to, when its header does not (official names: ltx-2-19b-*,
# ltx-2.3-22b-*, ltx-2.3-spatial-upscaler-x2-1.1)
_NAME_VERSION = ((re.compile(r"ltx-?2[.-]3|(^|[-_.])22b([-_.]|$)"), "2.3"), (re.compile(r"(^|[-_.])19b([-_.]|$)"), "2.0"))


def _name_version(path: Path) -> str | None:
    name = path.name.lower()
    return next((v for pattern, v in _NAME_VERSION if pattern.search(name)), None)


def _metadata_version(metadata: dict) -> str | None:
    """The version entry ("2.0", "2.3") that a ``model_version`` metadata names, None without one."""
    v = str(metadata.get("model_version") or "").removeprefix("tiny-")
    return next((name for name in VERSIONS if v == name or v.startswith(name + ".")), None)


def _checkpoint(header: SafetensorsHeader, rep: FileReport, readers: Readers) -> None:
    rep.kind = CHECKPOINT
    keys = list(header.tensors)
    assigned: set[str] = set()
    missing_read, missing_unread = [], []
    for name, prefixes in COMPONENTS.items():
        inner = nested_prefixes(prefixes)  # keys of another component (the connectors under the transformer's)
        ks = [k for k in keys if k.startswith(prefixes) and not k.startswith(inner)]
        assigned.update(ks)
        part = _part(name, header, ks, readers, prefixes=prefixes)
        if ks:
            rep.parts.append(part)
        elif part.readers:
            missing_read.append((name, prefixes, part.readers))
        else:
            missing_unread.append(name)
    for name, prefixes, readers in missing_read:
        rep.problems.append(f"no {name} ({prefixes[0]}*): the {' / '.join(readers)} stage cannot run from this file")
    for name in missing_unread:
        rep.facts.append(f"no {name} (no stage reads it yet: conditioning on images, video or audio is not "
                         "implemented)")
    other = [k for k in keys if k not in assigned]
    if other:
        rep.problems.append(f"unexpected layout: {len(other)} tensors belong to no LTX-2 component, e.g. "
                            + ", ".join(other[:3]))

    try:
        cfg = header.config()
    except (CheckpointError, ValueError) as e:
        rep.problems.append(f"no usable config metadata ({e})")
        cfg = {}
    version = header.metadata.get("model_version")
    ltx23 = _ltx23_options(cfg)
    said = _metadata_version(header.metadata)
    # the metadata selects the defaults (steps, STG block); the config builds the networks: they must agree
    entry = VERSIONS[said] if said else VERSIONS["2.3" if ltx23 else "2.0"]
    rep.info["version"] = "LTX-2.3" if entry.name == "2.3" else "LTX-2"
    rep.info["model_version"] = entry.name
    if ltx23:
        rep.facts.append("LTX-2.3 layout: " + ", ".join(ltx23))
    if said and bool(ltx23) != (said == "2.3"):
        rep.problems.append(f"model_version {version!r} metadata says {entry.title} but the config "
                            + (f"has the LTX-2.3 switches {', '.join(ltx23)}" if ltx23 else
                               "has none of the LTX-2.3 switches") + ": a mixed or edited file")
    tcfg = cfg.get("transformer")
    if isinstance(tcfg, dict):
        try:
            c = TransformerConfig.from_config(tcfg)
            block = re.compile(re.escape(TRANSFORMER) + r"transformer_blocks\.(\d+)\.")
            blocks = {int(m.group(1)) for k in keys for m in [block.match(k)] if m}
            rep.info["num_layers"] = c.num_layers
            rep.facts.append(f"transformer: {c.num_layers} blocks, video {c.num_attention_heads} x "
                             f"{c.attention_head_dim} = {c.inner_dim} wide, audio {c.audio_num_attention_heads} x "
                             f"{c.audio_attention_head_dim} = {c.audio_inner_dim}, "
                             + (f"text features {c.caption_channels}" if c.caption_projection else
                                "text projected to each stream's width on the text side"))
            if blocks and blocks != set(range(c.num_layers)):
                rep.problems.append(f"config says num_layers={c.num_layers} but the file holds transformer blocks "
                                    f"{min(blocks)}..{max(blocks)} ({len(blocks)} of them)")
        except ValueError as e:
            rep.problems.append(f"transformer config refused: {e}")
    elif any(p.name == "transformer" for p in rep.parts):
        rep.problems.append("no transformer config in the metadata (config['transformer']): the denoise stage "
                            "builds the network from it")

    variant, how = _variant(header)
    rep.info["variant"] = variant  # the 2.3 distilled 1.1 file says "distilled" in its name as 2.0's does
    rep.facts.append(f"variant: {variant} ({how})" + (f"; model_version {version}" if version else ""))
    tr = [k for k in keys if k.startswith(TRANSFORMER_PREFIX) and not k.startswith(CONNECTOR_PREFIXES)]
    f8 = [k for k in tr if header.tensors[k].dtype == "F8_E4M3"]
    if f8:
        scaled = sum(header.tensors[k].scale is not None for k in f8)
        blocks = sorted({int(m.group(1)) for k in f8 for m in [re.search(r"transformer_blocks\.(\d+)\.", k)] if m})
        where = f"blocks {blocks[0]}-{blocks[-1]}" if blocks else "outside the blocks"
        how = (f"{scaled} with a per-tensor weight_scale (the published fp8 layout)" if scaled == len(f8) else
               f"{scaled} scaled, {len(f8) - scaled} cast-only")
        rep.info["fp8"] = True
        rep.facts.append(f"fp8 transformer: {len(f8)} E4M3 tensors in {where}, {how}; dequantised on load to the "
                         "compute dtype")
    if any(t.dtype == "F8_E5M2" for t in header.tensors.values()):
        rep.problems.append("F8_E5M2 tensors: not supported (official LTX-2 fp8 files use E4M3)")
    stray = _stray_scales(header)
    if stray:
        rep.problems.append(f"{len(stray)} fp8 scale tensors scale no tensor of the file, e.g. {stray[0]}")
    if header.companions:
        n_in = sum(1 for k in header.companions if fp8.companion_parent(k)[1] == "activation scale")
        if n_in:
            rep.facts.append(f"{n_in} input_scale tensors (activation scales for fp8 matmul kernels) are not used: "
                             "activations stay in the compute dtype")
    kind = "LTX-2.3" if rep.info["version"] == "LTX-2.3" else "LTX-2"
    held = ", ".join(p.name for p in rep.parts)
    label = "dev or distilled not recorded" if variant == "unknown" else variant
    rep.info["short"] = f"{kind} single-file checkpoint ({label}{', fp8' if f8 else ''})"
    rep.title = f"{rep.info['short']}: {held}"


# ----------------------------------------------------------------------------- latent upsampler

def upsampler_slot(cfg: dict) -> str | None:
    """The job slot an upsampler belongs in, from its config's ``spatial_upsample`` / ``temporal_upsample`` flags
    (absent: the reference defaults, spatial only): ``spatial_upsampler`` (x2 in space, frames kept),
    ``temporal_upsampler`` (F -> 2F-1 frames, size kept), or None for a combined one that no stage uses."""
    spatial, temporal = bool(cfg.get("spatial_upsample", True)), bool(cfg.get("temporal_upsample", False))
    if spatial and not temporal:
        return "spatial_upsampler"
    if temporal and not spatial:
        return "temporal_upsampler"
    return None


def _upsampler(header: SafetensorsHeader, cfg: dict, rep: FileReport, readers: Readers) -> None:
    rep.kind = UPSAMPLER
    slot = upsampler_slot(cfg)
    rep.info["slot"] = slot
    part = _part("latent upsampler", header, header.tensors, readers, role=slot)
    rep.parts.append(part)
    try:
        c = UpsamplerConfig.from_config(cfg)
    except ValueError as e:
        rep.problems.append(f"upsampler config refused: {e}")
        rep.title = "latent upsampler (config refused)"
        return
    mode = c.mode
    rep.info.update(mode="temporal" if mode == "temporal" else "spatial", spatial_scale=float(c.spatial_scale),
                    temporal=c.temporal_upsample)
    if mode == "temporal":
        what = "temporal x2"
    elif mode == "spatiotemporal":
        what = f"spatial x{c.spatial_scale:g} + temporal x2"
    else:
        what = f"spatial x{c.spatial_scale:g}" + (" (rational resampler)" if mode == "rational" else "")
    rep.info["what"] = what
    rep.title = f"latent upsampler, {what}"
    made_for = _metadata_version(header.metadata) or _name_version(header.path)
    release = re.search(r"-(\d+\.\d+)$", header.path.stem)  # ltx-2.3-spatial-upscaler-x2-1.1
    if made_for or release:
        rep.info["model_version"] = made_for
        rep.info["release"] = release.group(1) if release else None
        rep.title += " (" + ", ".join(([f"{VERSIONS[made_for].title.split(' (')[0]}"] if made_for else [])
                                      + ([f"v{release.group(1)}"] if release else [])) + ")"
    rep.facts.append(f"{c.in_channels} latent channels, {c.mid_channels} wide, {c.num_blocks_per_stage} res blocks "
                     "per stage" + (f"; the {part.readers[0]} stage also reads the video VAE statistics from the "
                                    "checkpoint" if part.readers else ""))
    if slot == "temporal_upsampler":
        rep.facts.append("read when a job sets temporal_upscale: true (model.temporal_upsampler); no official "
                         "pipeline uses it, this project's design")
    elif slot is None:
        rep.facts.append("no stage here uses a combined spatial + temporal upsampler")


# ----------------------------------------------------------------------------- LoRA

def _pattern(module: str) -> str:
    return re.sub(r"transformer_blocks\.\d+\.", "", module)


def _lora(header: SafetensorsHeader, rep: FileReport, readers: Readers) -> None:
    rep.kind = LORA
    keys = list(header.tensors)
    rep.parts.append(_part("LoRA", header, keys, readers, role=lora_role(0)))  # as a job's own LoRA
    try:
        targets = lora_targets(keys)
    except CheckpointError as e:
        rep.problems.append(str(e))
        targets = {}
    ranks = Counter(header.tensors[a].shape[0] for a, _ in targets.values() if header.tensors[a].shape)
    rep.info.update(targets=len(targets), ranks=sorted(ranks))
    connectors = [t for t in targets if t.startswith(tuple(p[len(TRANSFORMER_PREFIX):] for p in CONNECTOR_PREFIXES))]
    groups = Counter(_pattern(t[: -len(".weight")]) for t in targets if t not in connectors)
    rank = (f"rank {next(iter(ranks))}" if len(ranks) == 1 else
            "ranks " + ", ".join(str(r) for r in sorted(ranks)) if ranks else "no pairs")
    rep.title = f"LoRA, {rank}, {len(targets)} adapted weights"
    if groups:
        top = ", ".join(f"{g} x{n}" for g, n in groups.most_common(8))
        more = f" and {len(groups) - 8} more kinds" if len(groups) > 8 else ""
        rep.facts.append(f"targets: {top}{more}")
    if connectors:
        rep.facts.append(f"{len(connectors)} pairs target the text connectors: not fused (the official pipelines "
                         "fuse LoRAs into the transformer only)")
    unprefixed = [k for k in keys if k.endswith(LORA_SUFFIXES) and not k.startswith(LORA_PREFIX)]
    if unprefixed:
        rep.facts.append(f"{len(unprefixed)} keys lack the '{LORA_PREFIX}' prefix of the official LoRA files, "
                         f"e.g. {unprefixed[0]}")
    ignored = [k for k in keys if not k.endswith(LORA_SUFFIXES)]
    if ignored:
        rep.facts.append(f"{len(ignored)} other tensors (e.g. {ignored[0]}) are ignored, as the official loader "
                         "ignores them (no alpha scaling)")
    made_for = lora_version(header)
    if made_for:
        rep.info["model_version"] = made_for[0]
        rep.facts.append(f"made for {VERSIONS[made_for[0]].title} ({made_for[1]})")
    rep.facts.append("strength comes from the job (W += strength * B @ A)")


def lora_version(header: SafetensorsHeader) -> tuple[str, str] | None:
    """(the version entry a LoRA was made for, how that is known): its ``model_version`` metadata, the LTX-2.3
    switches of a transformer config in it, or its file name; None when nothing says."""
    said = _metadata_version(header.metadata)
    if said:
        return said, f"model_version {header.metadata['model_version']!r} metadata"
    try:
        cfg = header.config()
    except (CheckpointError, ValueError):
        cfg = {}
    if isinstance(cfg, dict) and isinstance(cfg.get("transformer"), dict):
        return ("2.3", "its config's LTX-2.3 switches") if _ltx23_options(cfg) else ("2.0", "its config")
    named = _name_version(header.path)
    return (named, "file name only") if named else None


# ----------------------------------------------------------------------------- Gemma

def _lm_prefix(keys) -> str | None:
    keys = set(keys)
    return next((p for p in GEMMA_LM_PREFIXES if f"{p}embed_tokens.weight" in keys), None)


def _gemma_config_facts(cfg: dict, rep: FileReport) -> None:
    text = cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}
    hidden, layers = text.get("hidden_size"), text.get("num_hidden_layers")
    rep.info.update(hidden_size=hidden, num_layers=layers)
    arch = ", ".join(cfg.get("architectures", [])) or cfg.get("model_type", "?")
    rep.facts.append(f"{arch}: {layers} layers, hidden size {hidden}"
                     + ("" if (hidden, layers) == (3840, 48) else " (the real LTX-2 text encoder, Gemma-3-12B, has "
                                                              "48 layers of 3840)"))
    model_type = str(cfg.get("model_type", ""))
    if model_type and not model_type.startswith("gemma3"):
        rep.problems.append(f"config.json model_type={model_type!r}: LTX-2 needs a Gemma-3 text encoder")


def _gemma_folder(path: Path, readers: Readers) -> FileReport:
    rep = FileReport(path, GEMMA)
    cfg_path = path / "config.json"
    if cfg_path.is_file():
        try:
            _gemma_config_facts(json.loads(cfg_path.read_text()), rep)
        except ValueError as e:
            rep.problems.append(f"config.json is not valid JSON ({e})")
    else:
        rep.problems.append("no config.json: the text encoder is built from it")
    if (path / "tokenizer.json").is_file():
        rep.info["tokenizer"] = True
        rep.facts.append("tokenizer: tokenizer.json" + (" + tokenizer_config.json"
                                                        if (path / "tokenizer_config.json").is_file() else ""))
    else:
        rep.info["tokenizer"] = False
        alt = [n for n in ("tokenizer.model", "tokenizer_config.json") if (path / n).is_file()]
        rep.problems.append("no tokenizer.json (the Gemma fast tokenizer the text-encode stage reads)"
                            + (f"; {' and '.join(alt)} alone are not enough" if alt else "")
                            + ": download every file of the Gemma repository")
    index_path = path / "model.safetensors.index.json"
    weight_map: dict[str, str] = {}
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            rep.problems.append(f"model.safetensors.index.json is unreadable ({e})")
        shards = sorted(set(weight_map.values()))
        absent = [s for s in shards if not (path / s).is_file()]
        if absent:
            rep.problems.append(f"missing shards: {len(absent)} of the {len(shards)} files the index names are "
                                f"absent: {', '.join(absent)}")
        files = [path / s for s in shards if (path / s).is_file()]
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            rep.problems.append("no *.safetensors weights and no model.safetensors.index.json")
    keys: dict[str, str] = {}
    lm_keys, other_keys = Counter(), Counter()
    lm_bytes = other_bytes = 0
    for f in files:
        try:
            h = read_header(f)
        except CheckpointError as e:
            rep.problems.append(f"{f.name} {_UNREADABLE_SHARD} ({str(e).replace(f'{f}: ', '', 1)})")
            continue
        rep.size += h.size
        rep.dtypes.update(t.dtype for t in _all_tensors(h).values())
        cut = _truncation(h)
        if cut:
            rep.problems.append(f"{f.name}: {cut}")
        for k in h.tensors:
            keys[k] = f.name
        prefix = _lm_prefix(h.tensors) or _lm_prefix(weight_map) or GEMMA_LM_PREFIXES[0]
        skip = GEMMA_OTHER_PREFIXES if prefix == "model." else ()
        for k in h.tensors:
            if k.startswith(prefix) and not k.startswith(skip):
                lm_keys.update([h.tensors[k].dtype])
                lm_bytes += _bytes(h, [k])
            else:
                other_keys.update([h.tensors[k].dtype])
                other_bytes += _bytes(h, [k])
    lost = [k for k, f in weight_map.items() if (path / f).is_file() and keys.get(k) != f]
    if lost:
        rep.problems.append(f"the index lists {len(lost)} tensors that its shards do not hold, e.g. {lost[0]} "
                            f"(in {weight_map[lost[0]]}): a damaged or mixed download")
    if keys and _lm_prefix(keys) is None:
        rep.problems.append("no Gemma-3 language model in the shards (no *embed_tokens.weight under "
                            f"{' / '.join(GEMMA_LM_PREFIXES)})")
    if lm_keys:
        rep.parts.append(Part("language model", sum(lm_keys.values()), lm_bytes, lm_keys, role="gemma",
                              readers=readers(role="gemma")))
    if other_keys:
        rep.parts.append(Part("vision tower, projector", sum(other_keys.values()), other_bytes, other_keys))
    shards = f"{len(files)} shard{'s' if len(files) != 1 else ''}" + (" (per the index)" if weight_map else "")
    rep.title = f"Gemma-3 text encoder folder, {shards}"
    return rep


def _is_gemma_shard(path: Path) -> bool:
    try:
        h = read_header(path)
    except CheckpointError:
        return False
    return "format" not in h.metadata and any(
        k.startswith(GEMMA_LM_PREFIXES) and not k.startswith(CHECKPOINT_PREFIXES) for k in h.tensors)


def looks_like_gemma_folder(path: Path) -> bool:
    """A Hugging Face Gemma folder: an index, a Gemma config.json, or shards that all hold Gemma weights."""
    if not path.is_dir():
        return False
    if (path / "model.safetensors.index.json").is_file():
        return True
    try:
        if str(json.loads((path / "config.json").read_text()).get("model_type", "")).startswith("gemma"):
            return True
    except (OSError, ValueError, AttributeError):
        pass
    files = sorted(path.glob("*.safetensors"))
    return bool(files) and all(_is_gemma_shard(f) for f in files)


# ----------------------------------------------------------------------------- converted files

def _made_from(name: str, prefix: str, slot: str | None) -> tuple[tuple[str, ...], str | None]:
    """What converted part ``name`` (stored under ``prefix``) stands for: (the official checkpoint key prefixes
    it was made from, or the weight role of the file it replaces)."""
    if name in ("gemma", "upsampler"):
        return (), ("gemma" if name == "gemma" else slot)
    if prefix in CHECKPOINT_PREFIXES:  # a network stored under its official prefix (the transformer, the VAEs...)
        return (prefix,), None
    return CHECKPOINT_PARTS.get(name, ()), None  # text_embeddings: the projection and the connectors together


def _converted(header: SafetensorsHeader, rep: FileReport, readers: Readers) -> None:
    rep.kind = CONVERTED
    try:
        parts = json.loads(header.metadata.get("parts", "{}"))
    except ValueError as e:
        rep.problems.append(f"converted file with unreadable 'parts' metadata ({e})")
        parts = {}
    rep.info["parts"] = sorted(parts)
    slot = None
    if "upsampler" in parts:  # its config metadata is the source upsampler's own
        try:
            cfg = header.config()
        except (CheckpointError, ValueError):
            cfg = {}
        rep.info["slot"] = slot = upsampler_slot(cfg if isinstance(cfg, dict) else {})
    for name, p in sorted(parts.items(), key=lambda kv: -len(kv[1].get("prefix", ""))):
        prefix = p.get("prefix", "")
        ks = [k for k in header.tensors if k.startswith(prefix)
              and not any(k.startswith(q["prefix"]) for n, q in parts.items()
                          if n != name and len(q.get("prefix", "")) > len(prefix))]
        bits = p.get("bits")
        made_from, role = _made_from(name, prefix, slot)
        rep.parts.append(_part(name + (f" (q{bits}, group {p.get('group_size')})" if bits else f" ({p.get('dtype')})"),
                               header, ks, readers, prefixes=made_from, role=role))
        for lo in p.get("loras") or []:
            rep.facts.append(f"{name}: LoRA {Path(str(lo.get('file', '?'))).name} fused at strength {lo.get('strength')}")
    rep.info["short"] = "ltx2 converted file (" + ", ".join(sorted(parts)) + ")"
    rep.title = "ltx2 converted file: " + ", ".join(sorted(parts))


# ----------------------------------------------------------------------------- entry points

def _is_lora(keys: list[str]) -> bool:
    n = sum(k.endswith(LORA_SUFFIXES) for k in keys)
    return n > 0 and n * 2 >= len(keys)


def identify(path: str | Path, *, readers: Readers) -> FileReport:
    """Describe ``path`` (a safetensors file or a Gemma folder) from headers only; ``readers`` says which stages
    read a part (stages.registry.readers_of)."""
    path = Path(path)
    if path.is_dir():
        if looks_like_gemma_folder(path):
            return _gemma_folder(path, readers)
        return FileReport(path, UNKNOWN, "a folder that is not a Gemma-3 text encoder folder",
                          problems=["not a Gemma folder: no model.safetensors.index.json, no Gemma config.json, "
                                    "no Gemma shards"])
    rep = FileReport(path, UNREADABLE)
    try:
        header = read_header(path)
    except CheckpointError as e:
        rep.title = "not a readable safetensors file"
        rep.problems.append(str(e).replace(f"{path}: ", "", 1))
        if path.is_file():
            rep.size = path.stat().st_size
        return rep
    rep.size = header.size
    rep.dtypes = Counter(t.dtype for t in _all_tensors(header).values())
    keys = list(header.tensors)
    try:
        cfg = header.config()
    except (CheckpointError, ValueError):
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    if header.metadata.get("format") == "ltx2.converted":
        _converted(header, rep, readers)
    elif keys and _is_lora(keys):
        _lora(header, rep, readers)
    elif any(k.startswith(CHECKPOINT_PREFIXES) for k in keys):
        _checkpoint(header, rep, readers)
    elif any(k in cfg for k in ("spatial_upsample", "temporal_upsample")) or cfg.get("_class_name") == \
            "LatentUpsampler" or {"initial_conv.weight", "final_conv.weight"} <= set(keys):
        _upsampler(header, cfg, rep, readers)
    elif _lm_prefix(keys) is not None or any(k.startswith(GEMMA_LM_PREFIXES) for k in keys):
        single = "gemma_config" in header.metadata
        rep.kind = GEMMA if single else GEMMA_SHARD
        rep.parts.append(_part("Gemma weights", header, keys, readers, role="gemma" if single else None))
        rep.title = ("single-file Gemma-3 text encoder (config in the metadata)" if single else
                     "one shard of a Gemma-3 folder: give the folder (config.json, tokenizer, every shard)")
        if single:
            try:
                _gemma_config_facts(json.loads(header.metadata["gemma_config"]), rep)
            except ValueError as e:
                rep.problems.append(f"its gemma_config metadata is not valid JSON ({e}): re-download it")
    else:
        rep.kind = UNKNOWN
        rep.title = "not an LTX-2 file this program recognises"
        rep.problems.append(f"unrecognised layout: {len(keys)} tensors"
                            + (f", e.g. {keys[0]}" if keys else "") + "; not a checkpoint, upsampler, LoRA or Gemma")
    cut = _truncation(header)
    if cut:
        rep.problems.insert(0, cut)
    if "ltx2_synthetic" in header.metadata:  # models/full_size.py: real layouts for planning, zeros for tensors
        rep.facts.insert(0, f"synthetic {header.metadata['ltx2_synthetic']} file: the real layout, but its tensors "
                            "read as zeros (for planning and tests, not weights)")
    return rep


_UNREADABLE_SHARD = "is not a readable safetensors file"
_DOWNLOAD_GAPS = ("no tokenizer.json", "missing shards", "the index lists", "model.safetensors.index.json is",
                  "truncated")

# what each job slot holds, for the messages
SLOT_WANTS = {
    "checkpoint": "the single-file LTX-2 checkpoint (ltx-2-19b-distilled*.safetensors or ltx-2-19b-dev*.safetensors; "
                  "LTX-2.3: ltx-2.3-22b-distilled*.safetensors or ltx-2.3-22b-dev*.safetensors)",
    "spatial_upsampler": "the spatial x2 latent upscaler (ltx-2-spatial-upscaler-x2-1.0.safetensors)",
    "temporal_upsampler": "the temporal x2 latent upscaler (ltx-2-temporal-upscaler-x2-1.0.safetensors)",
    "lora": "a LoRA file (*.lora_A.weight / *.lora_B.weight pairs)",
    "gemma": "the Gemma-3 text encoder folder (config.json, tokenizer.json, every model-*.safetensors shard)",
}
# kind -> the slot where such a file goes (an upsampler's: its info["slot"], from its config)
_HOME = {CHECKPOINT: "checkpoint", LORA: "distilled_lora (or a LoRA list)",
         GEMMA: "gemma", GEMMA_SHARD: "gemma (the whole folder)"}


def _described(rep: FileReport) -> str:
    what = rep.info.get("short") or (rep.title.split(":")[0] if rep.kind == CONVERTED else rep.title)
    return {CHECKPOINT: "an", UPSAMPLER: "a", LORA: "a", GEMMA_SHARD: ""}.get(rep.kind, "a") + " " + what


def slot_problem(path: str | Path, slot: str, checkpoint: str | Path | None = None, *,
                 readers: Readers) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) if ``path`` does not belong in the job slot ``slot`` (a key of SLOT_WANTS);
    None if it fits or cannot be told from its header (an unrecognised file is left to the loader). Given the
    job's ``checkpoint``, a LoRA is also checked against it (every adapted weight present, shapes equal).
    ``readers``: as for :func:`identify` (the stages named in a problem)."""
    rep = identify(path, readers=readers)
    want = SLOT_WANTS[slot]
    cut = next((p for p in rep.problems if p.startswith("truncated") or ": truncated" in p), None)
    if rep.kind == UNREADABLE:
        return f"is not a readable safetensors file ({rep.problems[0]})", f"give the path of {want}"
    if cut:
        return f"is {cut}", f"re-download {want}"
    if rep.kind == UNKNOWN:
        return None
    if slot == "gemma":
        if rep.kind != GEMMA:
            return f"is {_described(rep).strip()}, not a Gemma folder", f"give the path of {want}"
        # what an incomplete download shows; other problems (config, layout) are left to the loader's message
        gaps = [p for p in rep.problems if p.startswith(_DOWNLOAD_GAPS) or ": truncated" in p or _UNREADABLE_SHARD in p]
        if gaps:
            return "is an incomplete Gemma folder: " + "; ".join(gaps), f"give the path of {want}"
        return None
    upsampler = rep.kind == UPSAMPLER or (rep.kind == CONVERTED and "upsampler" in rep.info.get("parts", ()))
    fits = {"checkpoint": rep.kind == CHECKPOINT or (rep.kind == CONVERTED and bool(
                set(rep.info.get("parts", ())) - {"upsampler"})),
            "spatial_upsampler": upsampler and rep.info.get("slot") == "spatial_upsampler",
            "temporal_upsampler": upsampler and rep.info.get("slot") == "temporal_upsampler",
            "lora": rep.kind == LORA}[slot]
    if not fits:
        home = rep.info.get("slot") if rep.kind == UPSAMPLER or rep.info.get("parts") == ["upsampler"] else \
            _HOME.get(rep.kind)
        if upsampler and slot.endswith("upsampler"):
            what = f"a latent upsampler, {rep.info['what']}" if "what" in rep.info else _described(rep).strip()
            where = (f"this file belongs under {home}" if home else
                     "no job field takes a combined spatial + temporal upsampler")
            return f"is {what}, not {want.split(' (')[0]}", f"give the path of {want}; {where}"
        return (f"is {_described(rep).strip()}, not {want.split(' (')[0]}",
                f"give the path of {want}" + (f"; this file belongs under {home}" if home else ""))
    if rep.kind == UPSAMPLER and rep.problems:
        return f"is a latent upsampler that cannot run: {rep.problems[0]}", f"give the path of {want}"
    if slot == "spatial_upsampler" and rep.kind == UPSAMPLER and rep.info.get("spatial_scale") not in \
            TWO_STAGE_SPATIAL_SCALES:
        # the pipelines render stage 1 at target / scale: another scale would only fail in refine, after denoise
        return (f"is a latent upsampler, {rep.info.get('what', '?')}; the two-stage pipelines upscale x2 or x1.5",
                f"give the path of {want}")
    if slot == "checkpoint" and rep.kind == CHECKPOINT:
        serious = [p for p in rep.problems if p.startswith(("model_version", "no transformer", "transformer config"))]
        if serious:
            return f"is an {rep.info.get('version')} checkpoint that cannot run: {serious[0]}", \
                f"give the path of {want}"
    if slot == "lora" and rep.problems:
        return f"is a damaged LoRA: {rep.problems[0]}", f"give the path of {want}"
    if slot == "lora" and checkpoint is not None:
        ck = identify(checkpoint, readers=readers)
        if ck.kind not in (CHECKPOINT, CONVERTED):
            return None
        fix = "give the LoRA made for this checkpoint's model (LTX-2 19B LoRAs for LTX-2, LTX-2.3 22B ones for 2.3)"
        made_for, ck_version = rep.info.get("model_version"), _checkpoint_version(ck, Path(checkpoint))
        if made_for and ck_version and made_for != ck_version:
            how = lora_version(read_header(path))[1]
            return (f"is a LoRA for {VERSIONS[made_for].title} ({how}), but the checkpoint {Path(checkpoint).name} "
                    f"is {VERSIONS[ck_version].title}", fix)
        misfit = lora_fit_problems(path, checkpoint) if ck.kind == CHECKPOINT else []
        if misfit:
            return f"does not fit the checkpoint {Path(checkpoint).name}: {misfit[0]}", fix
    return None


def _checkpoint_version(rep: FileReport, path: Path) -> str | None:
    """The version entry of a checkpoint (its report) or of a converted folder's file (its source's metadata)."""
    if rep.kind == CHECKPOINT:
        return rep.info.get("model_version")
    try:
        return _metadata_version(read_header(path).metadata)
    except CheckpointError:
        return None


def lora_fit_problems(lora: str | Path, checkpoint: str | Path) -> list[str]:
    """Header-only: the LoRA's adapted weights that the checkpoint's transformer lacks or whose shapes differ."""
    lh, ch = read_header(lora), read_header(checkpoint)
    ignore = tuple(p[len(TRANSFORMER_PREFIX):] for p in CONNECTOR_PREFIXES)
    problems = []
    try:
        targets = lora_targets(lh.tensors)
    except CheckpointError as e:
        return [str(e)]
    absent, bad = [], []
    for target, (ka, kb) in targets.items():
        if target.startswith(ignore):
            continue
        t = ch.tensors.get(TRANSFORMER_PREFIX + target)
        if t is None:
            absent.append(target)
            continue
        a, b = lh.tensors[ka].shape, lh.tensors[kb].shape
        if len(a) != 2 or len(b) != 2 or (b[0], a[1]) != tuple(t.shape):
            bad.append(f"{target}: B @ A is {(b[0] if b else '?', a[1] if len(a) > 1 else '?')}, the weight "
                       f"{tuple(t.shape)}")
    if absent:
        problems.append(f"{len(absent)} of its {len(targets)} adapted weights are not in the checkpoint's transformer, "
                        f"e.g. {', '.join(absent[:3])}: a LoRA for another model?")
    if bad:
        problems.append(f"{len(bad)} adapted weights have other shapes than the checkpoint's, e.g. {bad[0]}")
    return problems

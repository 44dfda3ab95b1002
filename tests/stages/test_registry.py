"""The stage registry: every stage declared once in its own module, typed params, ports, `ltx2 stage --help`."""

from __future__ import annotations

import importlib
import json

import pytest
from typer.testing import CliRunner

from ltx2.cli.main import app
from ltx2.orchestrator.recipes import RECIPES, Expand
from ltx2.spec.errors import BadInputError
from ltx2.stages.base import open_inputs
from ltx2.stages.registry import StageDef, StageParams, stage_def, stage_names

STAGES = ("text-encode", "image-encode", "video-encode", "audio-encode", "denoise", "upscale", "temporal-upscale",
          "refine", "decode", "vocode", "soundtrack", "export", "preview")


def test_every_stage_is_one_module_declaring_itself() -> None:
    assert set(stage_names()) == set(STAGES)
    for name in STAGES:
        sd = stage_def(name)
        mod = importlib.import_module(f"ltx2.stages.{name.replace('-', '_')}")
        assert isinstance(sd, StageDef) and mod.STAGE is sd and sd.name == name and sd.version >= 1
        assert issubclass(sd.params, StageParams) and sd.params.model_config["frozen"]
        assert (sd.output_kind is None) == (sd.output_name is None), name  # an artifact has a name, a file not
    # every recipe wires only registered stages, each port to a declared port
    for recipe in RECIPES.values():
        for node in recipe:
            if isinstance(node, Expand):  # the job's own nodes (one per conditioning file): their stages exist
                assert all(stage_def(name) for name in node.stages)
                continue
            ports = stage_def(node.stage).inputs
            assert set(node.inputs) <= set(ports), node.stage
            assert {p for p, spec in ports.items() if not spec.optional} <= set(node.inputs), node.stage


def test_unknown_stage_is_bad_input_listing_the_stages() -> None:
    with pytest.raises(BadInputError, match="unknown stage 'decoder'.*decode"):
        stage_def("decoder")


@pytest.mark.parametrize("name, raw, words", [
    ("denoise", {"frames": 10}, ("frames", "8k+1", "17")),
    ("denoise", {"seeed": 3}, ("seeed", "Extra inputs")),
    ("export", {"crf": 99}, ("crf", "51")),
    ("decode", {"tiling": {"spatial_tile": 100}}, ("spatial_tile", "multiple of 32")),
    ("denoise", {"fps": float("nan")}, ("fps",)),
    ("temporal-upscale", {"scale": 3}, ("scale",)),
])
def test_bad_params_are_refused_naming_the_field(name, raw, words) -> None:
    with pytest.raises(BadInputError) as e:
        stage_def(name).parse_params(raw)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_params_have_one_canonical_dump() -> None:
    sd = stage_def("denoise")
    a = sd.parse_params({"fps": 24, "schedule": {"kind": "fixed", "sigmas": [1, 0]}})
    b = sd.parse_params(json.loads(json.dumps(a.key_material())))  # through --params-json and back
    assert a == b and a.key_material() == b.key_material()
    assert a.key_material()["weights_mode"] == {"precision": "float32", "streaming": False}


def test_stage_help_lists_ports_roles_and_typed_params() -> None:
    r = CliRunner().invoke(app, ["stage", "refine", "--help"], terminal_width=200)
    out = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    for words in ("latents (latents)", "text (text)", "checkpoint (transformer)", "distilled_lora", "schedule",
                  "weights_mode", "distilled_lora", "loras"):
        assert words in out, words
    r = CliRunner().invoke(app, ["stage", "export", "--help"], terminal_width=200)
    assert "crf" in r.output and "23" in r.output  # the default, declared once (the job's default is this one)
    r = CliRunner().invoke(app, ["stage", "nope", "--help"], terminal_width=200)
    assert r.exit_code == 2 and "unknown stage" in r.output


class _Art:
    def __init__(self, kind, name):
        self.kind, self.path, self.cache_key = kind, name, name


def test_inputs_go_to_ports_by_kind_or_by_name(monkeypatch) -> None:
    arts = {"a.zarr": _Art("latents", "a.zarr"), "t.zarr": _Art("text", "t.zarr"), "b.zarr": _Art("latents", "b.zarr")}
    monkeypatch.setattr("ltx2.stages.base.open_artifact", lambda p: arts[str(p)])
    refine = stage_def("refine")
    got = open_inputs(refine, [(None, "t.zarr"), (None, "a.zarr")])
    assert got["latents"].path == "a.zarr" and got["text"].path == "t.zarr"
    got = open_inputs(refine, [("text", "t.zarr"), ("latents", "b.zarr")])
    assert got["latents"].path == "b.zarr"
    with pytest.raises(BadInputError, match="two artifacts given for port latents|two latents artifacts"):
        open_inputs(refine, [(None, "t.zarr"), (None, "a.zarr"), (None, "b.zarr")])
    with pytest.raises(BadInputError, match="no input port 'frames'"):
        open_inputs(refine, [("frames", "a.zarr")])
    with pytest.raises(BadInputError, match="port text of refine reads text"):
        open_inputs(refine, [("text", "a.zarr")])
    with pytest.raises(BadInputError, match="needs a text artifact"):
        open_inputs(refine, [(None, "a.zarr")])

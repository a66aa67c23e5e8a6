"""Legacy fairseq checkpoints (the wmt19 files' layout), made from real ones by applying the old
layout: ``args`` Namespace instead of ``cfg``, fused ``in_proj_weight/bias``, ``layer_norms.N``,
``decoder.embed_out``, ``_float_tensor`` buffers. They must convert to exactly the same tensors."""
from __future__ import annotations

import argparse
import re

import pytest
import torch
from safetensors.torch import load_file

from converters.fairseq.upgrade import upgrade
from tests.conftest import requires_fairseq
from tests.helpers import convert_cli, model_dir, trusted_load

SEP = model_dir("ende-sep")
ENC_LN = {"self_attn_layer_norm": "0", "final_layer_norm": "1"}
DEC_LN = {"self_attn_layer_norm": "0", "encoder_attn_layer_norm": "1", "final_layer_norm": "2"}


def to_legacy(state: dict, untie_output: bool = False) -> dict:
    """The inverse of fairseq's upgrades, applied to a current checkpoint."""
    model = dict(state["model"])
    for prefix in sorted({k.rsplit(".", 2)[0] for k in model if re.search(r"\.(self_attn|encoder_attn)\.q_proj\.", k)}):
        for kind in ("weight", "bias"):
            parts = [model.pop(f"{prefix}.{p}_proj.{kind}") for p in "qkv"]
            model[f"{prefix}.in_proj_{kind}"] = torch.cat(parts, dim=0)           # [3E, E] / [3E]
    for key in list(model):
        m = re.match(r"^(encoder|decoder)\.layers\.(\d+)\.(\w+_layer_norm)\.(weight|bias)$", key)
        if m:
            n = (ENC_LN if m[1] == "encoder" else DEC_LN)[m[3]]
            model[f"{m[1]}.layers.{m[2]}.layer_norms.{n}.{m[4]}"] = model.pop(key)
    for side in ("encoder", "decoder"):
        model[f"{side}.embed_positions._float_tensor"] = torch.FloatTensor(1)
    if untie_output:
        model["decoder.embed_out"] = model.pop("decoder.output_projection.weight").clone()
    args = argparse.Namespace(**vars(state["cfg"]["model"]))
    if untie_output:
        args.share_decoder_input_output_embed = False
    return {"args": args, "model": model, "optimizer_history": state["optimizer_history"],
            "extra_state": state["extra_state"], "last_optimizer_state": None}


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy")
    modern = trusted_load(SEP / "model2.pt")
    torch.save(to_legacy(modern), root / "legacy.pt")
    return root, modern


def test_pure_upgrade_inverts_the_legacy_layout(legacy):
    root, modern = legacy
    old = trusted_load(root / "legacy.pt")["model"]
    upgraded, notes = upgrade(old)
    assert {k for k, _ in notes} >= {k for k in old if "in_proj" in k or "layer_norms" in k}
    expected = {k: v for k, v in modern["model"].items()}
    assert set(upgraded) - {k for k in upgraded if k.endswith("_float_tensor")} == set(expected)
    for k, v in expected.items():
        assert torch.equal(upgraded[k], v), k


def test_legacy_converts_to_the_same_tensors(legacy, tmp_path):
    root, _ = legacy
    for name, ckpt in (("modern", SEP / "model2.pt"), ("legacy", root / "legacy.pt")):
        assert convert_cli("--checkpoint", ckpt, "--data-dir", SEP, "--out", tmp_path / name) == 0
    a = load_file(str(tmp_path / "modern" / "model.safetensors"))
    b = load_file(str(tmp_path / "legacy" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_legacy_untied_embed_out(legacy, tmp_path):
    root, modern = legacy
    torch.save(to_legacy(modern, untie_output=True), root / "untied.pt")
    assert convert_cli("--checkpoint", root / "untied.pt", "--data-dir", SEP, "--out", tmp_path / "o") == 0
    t = load_file(str(tmp_path / "o" / "model.safetensors"))
    assert torch.equal(t["model.decoder.output_projection.weight"], modern["model"]["decoder.output_projection.weight"])


@requires_fairseq
def test_fairseq_itself_reads_the_legacy_file_the_same(legacy, tmp_path):
    """The legacy file is genuine: fairseq upgrades it on load and translates exactly as before."""
    import shutil

    from parity.fairseq_hub import load_hub, translate_lines

    root, _ = legacy
    for f in ("dict.en.txt", "dict.de.txt", "bpecodes"):
        shutil.copy(SEP / f, tmp_path / f)
    shutil.copy(root / "legacy.pt", tmp_path / "model.pt")
    lines = ["Click on the arrow of the drop-down list.", "Delete the selected rows?"]
    new = translate_lines(load_hub(SEP, "model2.pt", "en", "de"), lines)
    old = translate_lines(load_hub(tmp_path, "model.pt", "en", "de"), lines)
    assert new == old

"""Every architecture option that changes the math, on real checkpoints fairseq-train wrote here:
converted faithfully, flagged where transformers' FSMT cannot express it, and matched against
fairseq's own forward pass where FSMT can."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import requires_fairseq
from tests.fairseq_models import VARIANTS, build
from tests.helpers import convert_cli, trusted_load

pytestmark = requires_fairseq

# (FSMT can run it, the option names the config must flag)
EXPECT = {
    "deep-shallow-untied": (True, []),
    "prenorm": (False, ["pre-norm"]),
    "lnemb-noscale": (False, ["layernorm_embedding"]),
    "learnedpos-gelu": (False, ["learned positional"]),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    src = build(request.param)
    out = tmp_path_factory.mktemp(request.param) / "out"
    assert convert_cli("--checkpoint", src / "model.pt", "--data-dir", src, "--out", out) == 0
    return request.param, src, out


def test_every_weight_kept_bitwise(variant):
    _, src, out = variant
    original = trusted_load(src / "model.pt")["model"]
    ours = load_file(str(out / "model.safetensors"))
    ties = json.loads((out / "config.json").read_text())["porting"]["ties"]
    for key, value in original.items():
        if key.endswith(".version"):
            continue
        name = "model." + key
        assert torch.equal(ours[ties.get(name, name)], value), key


def test_architecture_recorded_and_flagged(variant):
    name, src, out = variant
    cfg = json.loads((out / "config.json").read_text())
    arch = cfg["porting"]["architecture"]
    args = vars(trusted_load(src / "model.pt")["cfg"]["model"])
    for key in ("encoder_layers", "decoder_layers", "encoder_normalize_before", "decoder_normalize_before",
                "layernorm_embedding", "no_scale_embedding", "activation_fn", "encoder_learned_pos"):
        assert arch[key] == args[key], key
    compatible, flags = EXPECT[name]
    assert cfg["porting"]["transformers_compatible"] is compatible
    for flag in flags:
        assert any(flag in why for why in cfg["porting"]["transformers_incompatibilities"]), flag
    assert cfg["tie_word_embeddings"] == args["share_decoder_input_output_embed"]


def test_fsmt_matches_fairseq_where_it_can(variant):
    name, src, out = variant
    if not EXPECT[name][0]:
        pytest.skip("transformers' FSMT cannot express this architecture; the native port runs it")
    from transformers import FSMTForConditionalGeneration

    from parity.fairseq_hub import load_hub

    hub = load_hub(src, "model.pt", "en", "de")
    model, info = FSMTForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    src_ids = hub.encode("Click on the arrow of the drop-down list.").unsqueeze(0)
    prev = torch.tensor([[2, 40, 41, 42, 43]])
    with torch.no_grad():
        theirs = hub.models[0](src_ids, torch.tensor([src_ids.shape[1]]), prev)[0]
        ours = model.eval()(input_ids=src_ids, decoder_input_ids=prev, use_cache=False).logits
    assert (theirs - ours).abs().max() < 1e-4

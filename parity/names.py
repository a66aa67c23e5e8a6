"""Where each compared tensor comes from on both sides: the one declared correspondence between
fairseq's modules and the port's layer boundaries.

The recorder registers its fairseq hooks from this table and the port emits the same names from
``porting.model.transformer`` (its ``hooks(name, x)`` calls), so a name in a report means the same point of
the forward pass on both sides. States are time-major [T, B, C] on both sides, as in fairseq.
"""
from __future__ import annotations

from dataclasses import dataclass

# transformers' FSMT keeps fairseq's module names under this prefix (FSMTForConditionalGeneration.model):
# its boundary table is fairseq's, prefixed (parity/peers.py hooks these modules)
FSMT_PREFIX = "model."


@dataclass(frozen=True)
class Boundary:
    name: str            # the name in reports (and the port's hook name)
    fairseq_module: str  # module path inside fairseq's TransformerModel ("" = the model's own output)
    taken_from: str      # "input" (forward pre-hook, first argument) or "output" (forward hook)
    meaning: str


def boundaries(encoder_layers: int, decoder_layers: int, encoder_final_norm: bool,
               decoder_final_norm: bool) -> list[Boundary]:
    """The boundaries of one model, in forward order."""
    table = []
    for side, n, final in (("encoder", encoder_layers, encoder_final_norm),
                           ("decoder", decoder_layers, decoder_final_norm)):
        # fairseq has no module ending with the embeddings (scale, positions, layernorm_embedding and
        # dropout are inline in forward), so "embed" is the first layer's input.
        table.append(Boundary(f"{side}.embed", f"{side}.layers.0", "input",
                              "scaled token embedding + positions (+ layernorm_embedding), padded rows zeroed"))
        table += [Boundary(f"{side}.layers.{i}", f"{side}.layers.{i}", "output", f"output of {side} layer {i}")
                  for i in range(n)]
        if final:
            table.append(Boundary(f"{side}.layer_norm", f"{side}.layer_norm", "output",
                                  f"{side}'s final layer norm (pre-norm models)"))
    table += [Boundary("decoder.logits", "", "output", "output projection, [T, V]"),
              Boundary("decoder.lprobs", "", "output", "get_normalized_probs(log_probs=True), float32, [T, V]")]
    return table


def of_fairseq_model(model) -> list[Boundary]:
    return boundaries(len(model.encoder.layers), len(model.decoder.layers),
                      getattr(model.encoder, "layer_norm", None) is not None,
                      getattr(model.decoder, "layer_norm", None) is not None)


def markdown_table(table: list[Boundary]) -> list[str]:
    rows = ["| name | fairseq module | taken from | meaning |", "|---|---|---|---|"]
    return rows + [f"| {b.name} | `{b.fairseq_module or 'model'}` | {b.taken_from} | {b.meaning} |" for b in table]

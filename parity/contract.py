"""The one contract every system under test keeps, declared once (the adapters: parity/native.py,
parity/peers.py; the registry that opens them by ``kind:DIR``: parity/systems.py).

A system is what a user deploys: our port, a transformers model or a CTranslate2 model. The
original's side is always a run in the recorder's format (parity/record.py), so every system is
compared the same way. A system has:

- ``kind``, ``label``, ``dir``; ``max_positions`` (its position table's length);
- ``start``: a ``porting.format.DecoderStart`` (the decoder's first input token, the tokens it forces as
  the first generated ones, the token its hypotheses end on); the harness holds it to the original's
  (inputs.json's "decoder"): a difference is a mapping fault;
- ``search_rules``: None where it claims fairseq's own search (every difference that is no tie is
  then unexplained), else a sentence naming its own rule;
- ``scores_forced``: whether its hypothesis scores count the forced tokens' log-probs, as fairseq's
  do (transformers and CTranslate2 count them as 0: near-equal hypotheses of other lengths can rank
  otherwise, parity/causes.py names that with its evidence);
- ``approximation``: None where it computes as the original does (float32), else its type ("bfloat16",
  "float16", "int8", CTranslate2's "int8_float32"...): it is then held to that type's budget
  (parity/approximation.py), not to identity;
- ``stages(line)``: its own tokenization of a line, per stage ("moses", "bpe", "ids");
- ``boundaries(src, prev, replace)``: teacher-forced tensors at the layer boundaries parity/names.py
  declares, [T, C] (logits and log-probs [T, V]); None where the system exposes none; ``shadows``:
  whether it takes ``replace`` (shadow mode, the native port only);
- ``translate(batch, options, cap)``: the n-best of each line (ids in the original's vocabulary),
  fairseq's options mapped to the system's own (``mapping`` says how, and what it cannot express);
- ``log_probs(src, tokens)``: teacher-forced log-probs of any hypothesis (</s> included), the raw
  model's, for finding why two systems part;
- ``symbols(ids)`` and ``decode(ids)``: the pieces and the text its users get.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class UnusableSystem(Exception):
    """A system that cannot be opened, or a comparison it cannot take part in (a usage error)."""


def require(module: str, label: str) -> None:
    """A peer's library, or one line saying which extra installs it (never an import traceback)."""
    import importlib

    from converters import PEERS_HINT

    try:
        importlib.import_module(module)
    except ImportError:
        raise UnusableSystem(f"{label}: needs {module}, which is not installed here: {PEERS_HINT}") from None


@dataclass
class Hyp:
    tokens: list[int]            # ends with </s>, as fairseq's
    score: float                 # the system's own final score


@dataclass
class Mapping:
    """fairseq's options in a system's own terms."""
    settings: dict
    not_expressible: list[str] = field(default_factory=list)   # "unkpen=-8.0: ..." (the closest mapping is used)


def fairseq_cap(options: dict, width: int, max_positions: int) -> int:
    """The most tokens before </s> fairseq's search allows a batch: max_len_a applies to the batch's
    padded source width (fairseq/sequence_generator.py), and the positions bound it."""
    return min(int(options.get("max_len_a", 0.0) * width + options.get("max_len_b", 200)), max_positions - 1)


def tokenizer_stages(tokenizer, line: str) -> dict[str, list]:
    """A line through the port's tokenizer, per stage: what the native port and a CTranslate2 model
    (which carries that tokenizer) are fed."""
    return {"moses": tokenizer.moses_tokens(line).split(), "bpe": tokenizer.encode_pieces(line).split(),
            "ids": tokenizer.encode(line)}

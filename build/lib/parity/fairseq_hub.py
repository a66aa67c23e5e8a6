"""Running the original: fairseq's hub interface on a local model directory.

Everything that touches fairseq goes through here, imported lazily.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path


class FairseqMissing(RuntimeError):
    pass


def fairseq_available() -> bool:
    try:
        import fairseq  # noqa: F401  (only: is it importable?)
    except Exception:  # ImportError, or fairseq's own import-time failures on unsupported Pythons
        return False
    return True


@contextlib.contextmanager
def fairseq_unpickling():
    """fairseq calls ``torch.load`` without ``weights_only``; torch >= 2.6 then refuses its
    checkpoints (``Unsupported global: argparse.Namespace``). This switch only affects calls that
    do not pass ``weights_only`` -- fairseq's -- so our own explicit ``weights_only=True`` loads stay
    safe. It is set only while fairseq loads the models we ask it to run."""
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def load_hub(model_dir: str | Path, checkpoints: str | list[str] | tuple[str, ...],
             source_lang: str, target_lang: str):
    """fairseq's ``GeneratorHubInterface`` on a directory in fairseq's release layout
    (``model*.pt``, ``dict.<lang>.txt``, ``bpecodes``), with the Moses + fastBPE pipeline the wmt19
    hub models use. Several checkpoints form an ensemble, as fairseq's ``a.pt:b.pt`` syntax does.

    Languages must be given: fairseq's Moses tokenizer otherwise detokenizes with English rules.
    """
    root_level = logging.getLogger().level
    try:
        from fairseq.models.transformer import TransformerModel
    except Exception as e:  # pragma: no cover - depends on the installation
        raise FairseqMissing(f"fairseq is not importable here ({e}); run `make setup`") from e
    # importing fairseq runs a basicConfig(level=DEBUG) in one of its tasks: matplotlib alone then
    # logs ~2,000 font-manager lines. Put the root level back; fairseq's own loggers to warnings.
    logging.getLogger().setLevel(root_level)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("fairseq", "fairseq_cli", "matplotlib", "hydra", "urllib3", "PIL"):
            logging.getLogger(name).setLevel(max(logging.WARNING, root_level))
    if not isinstance(checkpoints, str):
        checkpoints = ":".join(checkpoints)
    model_dir = Path(model_dir).resolve()
    with fairseq_unpickling():
        hub = TransformerModel.from_pretrained(
            str(model_dir), checkpoint_file=checkpoints, data_name_or_path=".",
            bpe="fastbpe", bpe_codes=str(model_dir / "bpecodes"), tokenizer="moses",
            source_lang=source_lang, target_lang=target_lang)
    hub.eval()
    return hub


def translate_lines(hub, lines: list[str], chunk_size: int = 50, **generation) -> list[str]:
    """Top hypothesis per line. ``generation`` takes fairseq's generation options (beam, lenpen, ...)."""
    out = []
    for start in range(0, len(lines), chunk_size):
        chunk = [hub.encode(line) for line in lines[start:start + chunk_size]]
        out += [hub.decode(hypos[0]["tokens"]) for hypos in hub.generate(chunk, **generation)]
    return out

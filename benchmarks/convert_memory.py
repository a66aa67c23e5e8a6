"""Peak memory and time of converting a wmt19-size fairseq checkpoint: ours beside transformers' own
FSMT converter script, on the same file, in one run.

    .venv/bin/python benchmarks/convert_memory.py [--work .build/bench]

The checkpoint is made here by fairseq-train (one update, so the Adam state is real):
`transformer_wmt_en_de_big` (6+6 layers, d=1024, ffn 4096), 31,232-entry source and target
dictionaries (the shipped dictionary padded with synthetic entries), separate dictionaries with
`--share-decoder-input-output-embed` (the wmt19 en-ru layout): about 2.9 GB with optimizer state.
transformers' converter comes from the transformers 4.47.1 wheel (newer wheels no longer ship it)
and runs against the installed transformers and fairseq. Both run under /usr/bin/time -v.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from parity import shipped  # noqa: E402
from porting.files import read_lines  # noqa: E402

BIN = Path(sys.executable).parent
VOCAB = 31232
FSMT_SCRIPT = "transformers/models/fsmt/convert_fsmt_original_pytorch_checkpoint_to_pytorch.py"


def env():
    return {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # for fairseq's own loads only


def big_dictionary(src: Path, dst: Path) -> None:
    lines = src.read_text(encoding="utf-8").splitlines()
    lines += [f"zzsynthetic{i} 1" for i in range(VOCAB - 4 - len(lines))]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_checkpoint(work: Path) -> Path:
    model_dir = work / "wmt19-size"
    if (model_dir / "model.pt").exists():
        return model_dir
    sep = shipped.catalog()["ende-sep"].path
    model_dir.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        big_dictionary(sep / f"dict.{lang}.txt", model_dir / f"dict.{lang}.txt")
    shutil.copy(sep / "bpecodes", model_dir / "bpecodes")
    text = work / "text"
    text.mkdir(exist_ok=True)
    for lang in ("en", "de"):  # any segmented text will do: the weights are what is measured
        lines = read_lines(shipped.DATA / f"valid.{lang}")[:200]
        (text / f"train.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = work / "data"
    subprocess.run([BIN / "fairseq-preprocess", "-s", "en", "-t", "de", "--trainpref", text / "train",
                    "--destdir", data, "--srcdict", model_dir / "dict.en.txt", "--tgtdict", model_dir / "dict.de.txt",
                    "--workers", "1"], check=True, env=env(), capture_output=True)
    save = work / "train"
    subprocess.run([BIN / "fairseq-train", data, "--arch", "transformer_wmt_en_de_big",
                    "--share-decoder-input-output-embed", "--optimizer", "adam", "--lr", "1e-4",
                    "--max-tokens", "256", "--max-update", "1", "--cpu", "--num-workers", "0",
                    "--no-progress-bar", "--disable-validation", "--no-epoch-checkpoints",
                    "--source-lang", "en", "--target-lang", "de", "--save-dir", save],
                   check=True, env=env(), capture_output=True)
    (save / "checkpoint_last.pt").rename(model_dir / "model.pt")
    shutil.rmtree(save)
    return model_dir


def fsmt_converter(work: Path) -> Path:
    script = work / "tf447" / FSMT_SCRIPT
    if not script.exists():
        subprocess.run([BIN / "pip", "download", "-q", "--no-deps", "-d", work / "tf447", "transformers==4.47.1"], check=True)
        wheel = next((work / "tf447").glob("transformers-4.47.1-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(FSMT_SCRIPT, work / "tf447")
    return script


def timed(cmd: list, log: Path) -> dict:
    r = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], env=env(), capture_output=True, text=True)
    log.write_text(r.stdout + r.stderr)
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1]) * 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr)[1]
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    return {"rss": rss, "seconds": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / ".build" / "bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = make_checkpoint(args.work)
    ckpt = model_dir / "model.pt"

    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)  # made just above: trusted
    weights = sum(v.numel() * v.element_size() for k, v in state["model"].items()
                  if k != "decoder.output_projection.weight")  # tied: the same storage as embed_tokens
    del state
    print(f"checkpoint {ckpt}: {ckpt.stat().st_size / 1e9:.2f} GB on disk, model weights {weights / 1e9:.2f} GB")

    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    ours = timed([BIN / "porting", "convert", "fairseq", "--checkpoint", ckpt, "--data-dir", model_dir,
                  "--out", out / "ours"], args.work / "ours.log")
    theirs = timed([sys.executable, fsmt_converter(args.work), "--fsmt_checkpoint_path", ckpt,
                    "--pytorch_dump_folder_path", out / "fsmt"], args.work / "fsmt.log")
    print(f"\n{'converter':<34} {'wall s':>8} {'peak RSS GB':>12} {'RSS / weights':>14}")
    for name, r in (("porting convert fairseq", ours), ("transformers FSMT script (4.47.1)", theirs)):
        if "error" in r:
            print(f"{name:<34} failed: {r['error']}")
        else:
            print(f"{name:<34} {r['seconds']:>8.1f} {r['rss'] / 1e9:>12.2f} {r['rss'] / weights:>14.2f}")
    if "error" not in ours and "error" not in theirs:
        print(f"\nours / transformers: time {ours['seconds'] / theirs['seconds']:.2f}x, "
              f"peak RSS {ours['rss'] / theirs['rss']:.2f}x")


if __name__ == "__main__":
    main()

import json
import sys

from parity import machine, shipped

# The shipped runs are replayed bitwise: torch, MKL and oneDNN must dispatch to the instruction set
# they were recorded on. They read this when they start, so before anything imports torch.
assert "torch" not in sys.modules, "tests/conftest.py must run before torch is imported"
machine.reproduce(json.loads((shipped.RUNS / "manifest.json").read_text()))

import pytest  # noqa: E402

from parity.fairseq_hub import fairseq_available  # noqa: E402

HAVE_FAIRSEQ = fairseq_available()
requires_fairseq = pytest.mark.skipif(not HAVE_FAIRSEQ, reason="fairseq is not installed here")


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """The shipped models converted once per test session: name -> directory.
    The ensemble is converted in fairseq's member order (model1.pt, model2.pt), as recorded."""
    from parity import shipped
    from porting_cli import main

    root = tmp_path_factory.mktemp("converted-shipped")
    cat = shipped.catalog()
    jobs = {
        "ende-sep": (cat["ende-sep"], ["model2.pt"]),
        "ende-sep-ensemble": (cat["ende-sep"], ["model1.pt", "model2.pt"]),
        "ende-joined": (cat["ende-joined"], ["model.pt"]),
        "m2m-enfres": (cat["m2m-enfres"], ["model.pt"]),
        "bart-man": (cat["bart-man"], ["model.pt"]),
        "mbart-enro": (cat["mbart-enro"], ["model.pt"]),
    }
    out = {}
    for name, (m, ckpts) in jobs.items():
        args = ["convert", "fairseq", "--data-dir", str(m.path), "--out", str(root / name)]
        for c in ckpts:
            args += ["--checkpoint", str(m.path / c)]
        assert main(args) == 0
        out[name] = root / name
    # the multilingual model's recorded runs, one per direction, all run the one conversion
    out.update({f"m2m-{d}": out["m2m-enfres"] for d in cat["m2m-enfres"].directions})
    return out


@pytest.fixture(scope="session")
def ct2(converted, tmp_path_factory):
    """The shipped models written by `porting convert ctranslate2` once per session: name -> directory
    (a multilingual direction's name maps to the one multilingual export, as in ``converted``)."""
    from porting_cli import main

    root = tmp_path_factory.mktemp("ct2")
    out = {}
    for name in ("ende-sep", "ende-joined", "m2m-enfres", "bart-man", "mbart-enro"):
        assert main(["convert", "ctranslate2", "--model", str(converted[name]), "--out", str(root / name)]) == 0
        out[name] = root / name
    out.update({d: out["m2m-enfres"] for d in converted if d.startswith("m2m-") and d != "m2m-enfres"})
    return out


@pytest.fixture(scope="session")
def replays_bitwise(converted):
    """run name -> whether this machine reproduces that recorded run's floats (tests/helpers.py,
    rounds_as_recorded). Probed for every run here, before any test changes the model's code (a test
    that monkeypatches the port must not change the answer). Tests that claim bitwise replays check
    them where it holds and their stated tolerances elsewhere."""
    from tests.helpers import rounds_as_recorded, teacher_forced_run

    runs = json.loads((shipped.RUNS / "manifest.json").read_text())["runs"]
    probed = {run: rounds_as_recorded(converted[run], run) for run in map(teacher_forced_run, runs)}
    answers = {run: probed[teacher_forced_run(run)] for run in runs}
    return answers.__getitem__

"""The installed wheel, outside the checkout (issue 19, items 16-18): what it declares, what it holds,
and that the README's main job runs from it in another directory, writing only there."""
from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from porting.kernels import build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ beside the sources, and a build/ in the checkout
    # would be taken for a first-party package by ruff's import sorting on the next `make test`
    src = tmp_path_factory.mktemp("source") / "checkout"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__"))
    # no build isolation: the venv's setuptools builds it, without the network
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(out)], check=True, capture_output=True)
    (whl,) = out.glob("porting_workbench-*.whl")
    return whl


def metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


def test_the_wheel_declares_ranges_license_and_the_original(wheel):
    meta = metadata(wheel)
    requires = meta.get_all("Requires-Dist")
    torch = [r for r in requires if r.startswith("torch")]
    assert torch == ["torch<2.14,>=2.13"]                        # a range, not the Makefile's exact pin
    assert any(r.startswith("fairseq-fixed==") and 'extra == "original"' in r for r in requires)
    assert meta["License-Expression"] == "MIT" and meta.get_all("Classifier")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for shipped in ("reference_runs/models/catalog.json", "reference_runs/models/ende-sep/model2.pt",
                    "reference_runs/data/test.en", "porting/kernels/skinny.c", "porting_cli/__main__.py",
                    "converters/fairseq/families/__init__.py"):
        assert shipped in names, shipped
    assert not any(n.startswith(("reference_runs/runs/", "reference_runs/tools/", "tests/")) for n in names)
    # every file the kernels are compiled from: a missing one leaves an installed wheel without them
    kernel_files = {f"porting/kernels/{f.name}" for f in (*build.SOURCES, *build.HEADERS)}
    assert kernel_files <= names, sorted(kernel_files - names)


def files_under(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_the_example_runs_from_the_wheel_elsewhere(wheel, tmp_path):
    site, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    installed = files_under(site)
    env = {**os.environ, "PYTHONPATH": str(site)}                # the wheel's copy, not the checkout's
    run = subprocess.run([sys.executable, "-m", "porting_cli", "example", "--lines", "2"], cwd=cwd, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert str(site) in run.stdout and "Traceback" not in run.stderr  # it converted the wheel's model
    assert (cwd / "porting-example" / "ende-sep" / "model.safetensors").is_file()
    assert files_under(site) == installed                        # nothing written into the installation
    record = subprocess.run([sys.executable, "-m", "porting_cli", "record"], cwd=cwd, env=env,
                            capture_output=True, text=True)
    assert record.returncode == 2 and "give --out" in record.stderr
    kernels = subprocess.run([sys.executable, "-m", "porting_cli", "kernels"], cwd=cwd, env=env,
                             capture_output=True, text=True)
    assert kernels.returncode == 0 and "C kernels: built" in kernels.stdout, kernels.stdout + kernels.stderr

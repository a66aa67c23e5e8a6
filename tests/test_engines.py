"""Bulk translation and grids on the engines (porting.engine): the same bytes as a single-process
run on every engine and shard count, resumable after an interrupt, and a worker's death survived.

The Ray tests run a real cluster of two nodes on this machine, started and stopped here, on the
loopback interface only: Ray replaces 127.0.0.1 and "localhost" with the machine's routable
address (ray._private.services.resolve_ip_for_localhost), so the nodes use 127.0.0.2, which is
loopback too (127.0.0.0/8) and which Ray keeps. Token authentication stays on, with a token made
for the test; usage statistics are off. (`ray stop --force`, which ends the fixture, stops every
Ray process of this machine's user: these tests are not for a machine running Ray for other work.)
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parity import shipped
from porting_cli import main
from tests.helpers import interruptible

pytestmark = pytest.mark.skipif(shutil.which("ray", path=str(Path(sys.executable).parent)) is None,
                                reason="Ray is not installed here (the `ray` extra)")

LOOPBACK = "127.0.0.2"
PORTING = [sys.executable, "-m", "porting_cli"]


@pytest.fixture(scope="module")
def model(converted):
    return converted["ende-joined"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bulk") / "source.en"
    path.write_text("".join(line + "\n" for line in shipped.test_set()[0][:160]), encoding="utf-8")
    return path


def translate(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*PORTING, "translate", *args], capture_output=True, text=True, env=env, timeout=600)


# Ray's actors and a pool of 2 on 2 cores run torch on one thread each; scores are bitwise those of a
# single-process run on as many threads (porting.engine.worker), so that is what they are held to
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def single(model, source) -> dict[str, str]:
    """The single-process run's standard output: what every engine must reproduce."""
    run = {"text": {}, "jsonl": {}, "jsonl-1-thread": {"env": ONE_THREAD}}
    return {name: translate("--model", str(model), "--input", str(source), "--format", name.split("-")[0],
                            "--batch-size", "8", **kw).stdout for name, kw in run.items()}


def bulk(model, source, out, *extra, env=None) -> subprocess.CompletedProcess:
    return translate("--model", str(model), "--input", str(source), "--out", str(out), "--batch-size", "8", *extra,
                     env=env)


# ---------------------------------------------------------------- local engine

@pytest.mark.parametrize("extra,expected", [(["--shards", "1"], "text"), (["--shards", "7", "--format", "jsonl"], "jsonl"),
                                            (["--jobs", "2", "--shards", "5"], "text")])
def test_local_bulk_is_byte_identical_to_the_single_process_run(model, source, single, tmp_path, extra, expected):
    out = tmp_path / "out"
    r = bulk(model, source, out, *extra)
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == single[expected]     # jsonl: scores included, bit for bit


@pytest.mark.skipif(os.cpu_count() != 2, reason="a pool of 2 runs one thread per process on 2 cores only")
def test_local_pool_scores_are_bitwise_those_of_one_thread(model, source, single, tmp_path):
    out = tmp_path / "out"
    r = bulk(model, source, out, "--jobs", "2", "--shards", "5", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == single["jsonl-1-thread"]
    assert not (tmp_path / "out.shards").exists()                  # the shards are gone once the file is whole


def start_bulk(model, source, out, *extra, env=None) -> subprocess.Popen:
    """A bulk job of 40 shards in the background, returned once it has kept its first shard."""
    p = subprocess.Popen([*PORTING, "translate", "--model", str(model), "--input", str(source), "--out", str(out),
                          "--batch-size", "4", "--shards", "40", *extra], stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=interruptible)
    deadline = time.time() + 300
    while not kept(out) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the job finished (or failed) before its first shard could be seen"
    return p


def kept(out: Path) -> int:
    return len(list(out.with_name(out.name + ".shards").glob("shard-*.json")))


def start_and_interrupt(model, source, out, *extra, env=None) -> subprocess.Popen:
    """A bulk job interrupted (SIGINT, as ^C) once it has finished a shard and before it finishes."""
    p = start_bulk(model, source, out, *extra, env=env)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    return p


def test_interrupted_job_keeps_its_shards_and_resumes(model, source, single, tmp_path):
    out = tmp_path / "out"
    p = start_and_interrupt(model, source, out)
    err = p.stderr.read()
    assert p.returncode == 130 and "--resume" in err, err
    finished = kept(out)
    assert 0 < finished < 40 and not out.exists()
    again = bulk(model, source, out, "--batch-size", "4", "--shards", "40")
    assert again.returncode == 1 and "--resume" in again.stderr         # nothing is silently redone or lost
    r = bulk(model, source, out, "--batch-size", "4", "--shards", "40", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming: {finished} of 40 shards" in r.stderr
    assert out.read_text(encoding="utf-8") == single["text"]


def test_kept_shards_of_another_job_are_not_reused(model, source, tmp_path):
    out = tmp_path / "out"
    start_and_interrupt(model, source, out)
    r = bulk(model, source, out, "--batch-size", "4", "--shards", "40", "--resume", "--beam", "2")
    assert r.returncode == 1 and "belongs to another run" in r.stderr
    r = bulk(model, source, out, "--batch-size", "4", "--beam", "2", "--force")
    assert r.returncode == 0, r.stderr


def test_a_dead_local_worker_names_the_shard_and_keeps_the_rest(model, source, tmp_path):
    """The local pool does not retry (Ray does, below): one error naming the shard and its first
    line, the finished shards kept for --resume."""
    out = tmp_path / "out"
    p = start_bulk(model, source, out, "--jobs", "2")
    children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(children[0]), signal.SIGKILL)
    p.wait(timeout=120)
    err = p.stderr.read()
    assert p.returncode == 1, err
    assert "error: shard " in err and "from input line " in err and "worker process died" in err
    assert "--resume" in err and kept(out)


@pytest.mark.parametrize("args,message", [
    (["--engine", "ray"], "only with --out"),
    (["--shards", "3"], "only with --out"),
    (["--out", "X", "--ray-address", "127.0.0.2:1"], "add --engine ray"),
    (["--out", "X", "--engine", "ray", "--jobs", "2"], "--jobs sets the local engine"),
])
def test_engine_flags_that_would_be_ignored_are_usage_errors(model, source, tmp_path, args, message):
    r = translate("--model", str(model), "--input", str(source), *[a.replace("X", str(tmp_path / "o")) for a in args])
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_bleu_on_a_local_pool_prints_the_single_process_score(model, source, tmp_path):
    ref = tmp_path / "ref.de"
    ref.write_text("".join(s + "\n" for s in shipped.test_set()[1][:160]), encoding="utf-8")
    score = ["bleu", "--model", str(model), "--input", str(source), "--reference", str(ref), "--batch-size", "8"]
    alone = subprocess.run([*PORTING, *score], capture_output=True, text=True)
    pooled = subprocess.run([*PORTING, *score, "--jobs", "2", "--shards", "3"], capture_output=True, text=True)
    assert alone.returncode == pooled.returncode == 0, pooled.stderr
    assert pooled.stdout == alone.stdout and "BLEU" in alone.stdout


@pytest.mark.parametrize("command", [["select", "--checkpoint", "a.pt", "--data-dir", ".", "--input", "x", "--reference", "y"],
                                     ["bleu", "--hypotheses", "x", "--reference", "y", "--engine", "ray"]])
def test_scoring_commands_refuse_engine_flags_they_would_ignore(command):
    r = subprocess.run([*PORTING, *command, "--ray-address", "127.0.0.2:1"], capture_output=True, text=True)
    assert r.returncode == 2 and "--ray-address" in r.stderr and "Traceback" not in r.stderr


def test_existing_output_is_refused_before_any_work(model, source, tmp_path):
    out = tmp_path / "out"
    out.write_text("mine\n")
    r = bulk(model, source, out)
    assert r.returncode == 1 and "--force" in r.stderr and out.read_text() == "mine\n"


def test_missing_ray_says_how_to_install_it(model, source, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)            # `import ray` raises ImportError
    rc = main(["translate", "--model", str(model), "--input", str(source), "--out", str(tmp_path / "o"),
               "--engine", "ray"])
    err = capsys.readouterr().err
    assert rc == 1 and "pip install 'porting-workbench[ray]'" in err and "Traceback" not in err


# ---------------------------------------------------------------- Ray: embedded, and a two-node cluster

def test_embedded_ray_is_byte_identical(model, source, single, tmp_path):
    out = tmp_path / "out"
    r = bulk(model, source, out, "--engine", "ray", "--format", "jsonl", env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == single["jsonl-1-thread"]
    assert r.stderr.strip().splitlines()[-1].startswith("wrote 160 translations")   # nothing of Ray's on stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a second node, one CPU each, on the loopback interface; the address and the
    environment a driver needs (the token). Stopped after the module."""
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    address = f"{LOOPBACK}:{_free_port()}"
    common = ["--node-ip-address", LOOPBACK, "--num-cpus", "1", "--object-store-memory", str(100 * 1024 ** 2),
              "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", "--port", address.split(":")[1], "--include-dashboard", "false",
                        *common], check=True, capture_output=True, env=env, timeout=120)
        subprocess.run([ray, "start", "--address", address, *common], check=True, capture_output=True, env=env,
                       timeout=120)
        yield address, env
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_two_node_bulk_is_byte_identical(model, source, single, cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "out"
    r = bulk(model, source, out, "--engine", "ray", "--ray-address", address, "--format", "jsonl", env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == single["jsonl-1-thread"]


def _ray_workers() -> list[int]:
    """Our actors' processes (Ray names them after the actor class: ray::Worker, ray::Worker.run)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines() if "ray::Worker" in line]


def test_a_killed_ray_worker_is_retried_with_the_same_result(model, source, single, cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "out"
    p = start_bulk(model, source, out, "--engine", "ray", "--ray-address", address, env=env)
    victims = _ray_workers()
    assert victims and p.poll() is None
    os.kill(victims[0], signal.SIGKILL)                                     # mid-run: shards are still pending
    assert kept(out) < 40
    p.wait(timeout=600)
    assert p.returncode == 0, p.stderr.read()
    assert out.read_text(encoding="utf-8") == single["text"]


def test_a_shard_that_keeps_failing_is_named_and_the_rest_kept(model, source, cluster, tmp_path):
    """Every worker killed as soon as it (re)starts, past Ray's restarts: one error naming the
    shard and its first line, the shards finished before kept for --resume."""
    address, env = cluster
    out = tmp_path / "out"
    p = start_bulk(model, source, out, "--engine", "ray", "--ray-address", address, env=env)
    deadline = time.time() + 300
    while p.poll() is None and time.time() < deadline:      # a restarted worker needs seconds to load: none finishes
        for pid in _ray_workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    p.wait(timeout=60)
    err = p.stderr.read()
    assert p.returncode == 1, err
    assert "error: shard " in err and "from input line " in err and "Traceback" not in err
    assert "--resume" in err and 0 < kept(out) < 40


def test_two_node_interrupt_and_resume(model, source, single, cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "out"
    ray_flags = ["--engine", "ray", "--ray-address", address]
    p = start_and_interrupt(model, source, out, *ray_flags, env=env)
    assert p.returncode == 130, p.stderr.read()
    r = bulk(model, source, out, "--batch-size", "4", "--shards", "40", "--resume", *ray_flags, env=env)
    assert r.returncode == 0 and "resuming:" in r.stderr, r.stderr
    assert out.read_text(encoding="utf-8") == single["text"]


def test_two_node_grid_equals_the_single_process_grid(model, cluster, tmp_path):
    """The same table and results.json, bit for bit, as --jobs 1 (the runtime recorded in both is
    the models'; the engine is not part of a result)."""
    address, env = cluster
    data = tmp_path / "data"
    data.mkdir()
    src, ref = shipped.test_set()
    (data / "valid.en").write_text("".join(s + "\n" for s in src[:48]), encoding="utf-8")
    (data / "valid.de").write_text("".join(s + "\n" for s in ref[:48]), encoding="utf-8")
    grid = ["search", "--model", str(model), "--input", str(data / "valid.en"), "--reference", str(data / "valid.de"),
            "--search", "beam=1:4 lenpen=0.6:1.2", "--batch-size", "8"]
    local = subprocess.run([*PORTING, *grid, "--out", str(tmp_path / "local")], capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    on_ray = subprocess.run([*PORTING, *grid, "--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-address",
                             address, "--shards", "3"], capture_output=True, text=True, env=env)
    assert on_ray.returncode == 0, on_ray.stderr
    for name in ("results.json", "table.md"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert len(json.loads((tmp_path / "ray" / "results.json").read_text())["results"]) == 4

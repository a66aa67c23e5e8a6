"""Translation speed: fairseq, transformers (FSMT, or M2M100 for the multilingual model), CTranslate2
and our port, one after the other in one run, on the same inputs, beam 5, on the CPU with the same
thread count.

    .venv/bin/python benchmarks/speed.py [--models shipped,m2m,wmt19-size] [--batch-sizes 1,32]
        [--systems fairseq,transformers,ctranslate2,ctranslate2-int8,port,port-exact,port-bf16,port-int8,port-int8-all]
        [--isa native|avx2]
        [--threads 2] [--rounds 2] [--repeat 2] [--work .build/bench] [--out .build/bench/speed.json]

Models: `shipped` is the shipped ende-sep model (model2.pt); `m2m` the shipped multilingual
m2m-enfres in its en-fr direction (every system given the language tokens as fairseq places them:
`__en__` first in the source, `__fr__` forced first in the output); `wmt19-size` is a
transformer_wmt_en_de_big with 31k-entry dictionaries made by fairseq-train here
(benchmarks/convert_memory.py makes it; its weights are barely trained, so every system decodes to
the length cap, which is set low to keep a run in minutes).

Every system gets the same source id sequences (our tokenizer, which is identical to fairseq's on
the shipped data), in the same batches (lines sorted by length, then cut into batches, for batch
sizes > 1), and each system's worker reports back the ids it actually fed its model: the run stops
if they differ. Each system runs in its own process (its peak RSS is its own) and decodes one
warm-up batch before the clock starts, then decodes everything --repeat times. The systems take
turns --rounds times (fairseq, FSMT, ..., port, then again), each round in fresh processes, and a
system's fastest repetition over all rounds counts (the others are in the JSON): this machine is
shared, and its speed drifts over minutes; one system's slow minute would otherwise become its
ratio to the others (measured: the port's batch-32 speed ran 3170 tok/s in one full run and
3800-4000 tok/s minutes later, alone). Reported: sentences/s, target tokens/s (hypothesis tokens
including </s>), peak RSS, each system's time relative to ours, and how many best hypotheses are
identical to fairseq's, and for the shipped model sacreBLEU of the detokenized output against the
test set's references. Tokenization and detokenization are not timed (the same for everyone).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEMS = ("fairseq", "transformers", "ctranslate2", "ctranslate2-int8", "port", "port-exact", "port-bf16", "port-int8",
           "port-int8-all")
BEAM = 5


# ---------------------------------------------------------------- preparation (main process)

def model_setups(work: Path) -> dict:
    from parity import shipped

    sep = shipped.catalog()["ende-sep"].path
    return {
        # name: fairseq dir, checkpoint, number of lines per batch size, max_len_b
        "shipped": {"dir": sep, "ckpt": "model2.pt", "lines": {1: 100, 32: 500}, "max_len_b": 200},
        "m2m": {"dir": shipped.catalog()["m2m-enfres"].path, "ckpt": "model.pt", "lines": {1: 100, 32: 200},
                "max_len_b": 200, "direction": ("en", "fr")},
        "wmt19-size": {"dir": work / "wmt19-size", "ckpt": "model.pt", "lines": {1: 6, 32: 32}, "max_len_b": 20},
    }


# The variables that hold a library to an instruction set. None is inherited from the caller (the test
# suite and `make parity` set them to AVX2 to replay recordings, and a benchmark run from such a shell
# would quietly time every system on AVX2); `--isa avx2` sets them all, for the AVX2 table.
ISA_VARIABLES = {"ATEN_CPU_CAPABILITY": "avx2",          # torch's own kernels
                 "MKL_ENABLE_INSTRUCTIONS": "AVX2",      # MKL (torch's and CTranslate2's GEMMs)
                 "ONEDNN_MAX_CPU_ISA": "AVX2",           # oneDNN (torch's and CTranslate2's)
                 "CT2_FORCE_CPU_ISA": "AVX2",            # CTranslate2's own kernels
                 "PORTING_NATIVE_ISA": "avx2"}           # the port's C kernels (porting/kernels/build.py)


def hold_isa(isa: str) -> None:
    """This process's (and so every worker's) instruction-set variables: none inherited, or all AVX2.
    Called before torch is imported (its capability is read once, at import)."""
    for name in ISA_VARIABLES:
        os.environ.pop(name, None)
    if isa == "avx2":
        os.environ.update(ISA_VARIABLES)


def env(extra: dict | None = None) -> dict:
    """A worker's environment: this process's (hold_isa's), plus a system's own settings (CTranslate2's ISA)."""
    return {**os.environ, **(extra or {}), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}   # fairseq's loads only


def prepare(name: str, setup: dict, work: Path) -> dict:
    """Converted directories for the port/transformers and CTranslate2 (made once, kept in work/);
    CTranslate2's float32 and int8 models both by `porting convert ctranslate2`."""
    bin_ = Path(sys.executable).parent
    if name == "wmt19-size" and not (setup["dir"] / "model.pt").exists():
        subprocess.run([sys.executable, ROOT / "benchmarks" / "convert_memory.py", "--work", work], check=True)
    ours = work / "speed" / name / "converted"
    if not (ours / "config.json").exists():
        subprocess.run([bin_ / "porting", "convert", "fairseq", "--checkpoint", setup["dir"] / setup["ckpt"],
                        "--data-dir", setup["dir"], "--out", ours, "--force"], check=True, capture_output=True)
    ct2 = {q: work / "speed" / name / f"ct2-{q}" for q in ("float32", "int8")}
    for quantization, path in ct2.items():
        if not (path / "tokenizer" / "config.json").exists():      # an export older than its tokenizer/: again
            subprocess.run([bin_ / "porting", "convert", "ctranslate2", "--model", ours, "--out", path,
                            "--quantization", quantization, "--force"], check=True, capture_output=True)
    src, tgt = setup.get("direction", ("en", "de"))
    return {"converted": str(ours), "ct2": str(ct2["float32"]), "ct2-int8": str(ct2["int8"]),
            "fairseq_dir": str(setup["dir"]), "ckpt": setup["ckpt"], "source_lang": src, "target_lang": tgt}


def batches_of(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Line indices per batch: in order for batch size 1; sorted by length then cut for bulk."""
    order = list(range(len(ids))) if batch_size == 1 else sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run_worker(system: str, job: dict, work: Path) -> dict:
    job_file, result_file = work / "job.json", work / f"result-{system}.json"
    job_file.write_text(json.dumps(job))
    result_file.unlink(missing_ok=True)
    extra = job.get("ct2_settings", {}).get(system, {}).get("env")
    r = subprocess.run([sys.executable, __file__, "--worker", system, "--job", job_file, "--result", result_file],
                       env=env(extra), capture_output=True, text=True)
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1], "log": r.stderr[-3000:]}
    return json.loads(result_file.read_text())


def merge_rounds(before: dict | None, now: dict, system: str) -> dict:
    """One system's results over the rounds so far: its fastest repetition, every repetition's
    time, its largest peak RSS. Its hypotheses must not change between rounds (all decode
    deterministically); an error in any round is the result."""
    if before is None or "error" in now:
        return now
    if now["hypotheses"] != before["hypotheses"] or now["fed"] != before["fed"]:
        raise SystemExit(f"{system} translated differently in two rounds")
    times = before["all_seconds"] + now["all_seconds"]
    return {**now, "seconds": min(times), "all_seconds": times, "peak_rss": max(before["peak_rss"], now["peak_rss"])}


# CTranslate2's settings tried before a run, fastest kept: its own kernels' instruction set (it picks
# AVX2 on this machine's CPUs unless told); for int8 models the compute type (on the CPU "int8" and
# "int8_float32" name one path today: both are tried, so the table never depends on it); and its
# threading. Its wheel runs MKL inside its own OpenMP loops, and on a 2-core machine here its
# 2-thread float32 ran at 107 tok/s (shipped, batch 1) against 1,107 with MKL_NUM_THREADS=1, and
# its int8 at 120 on 2 threads against 1,652 on one (measured 2026-12-06, Intel Xeon with AVX-512):
# so one thread, and the run's threads with MKL held to one, are candidates beside its default.
CT2_THREADINGS = (("default", None), ("mkl1", "1"), ("one", "1"))     # name, MKL_NUM_THREADS
CT2_CANDIDATES = {"ctranslate2": [("float32", isa, th) for isa in ("AVX2", "AVX512") for th in CT2_THREADINGS],
                  "ctranslate2-int8": [(ct, isa, th) for ct in ("int8", "int8_float32") for isa in ("AVX2", "AVX512")
                                       for th in CT2_THREADINGS]}
PROBE_LINES = 48      # lines each candidate translates (in the run's batches) to be timed


def ct2_candidate(compute_type: str, isa: str, threading: tuple, threads: int) -> dict:
    """One candidate's settings: what the worker passes CTranslate2 and the variables it runs under."""
    name, mkl = threading
    extra = {"CT2_FORCE_CPU_ISA": isa, **({"MKL_NUM_THREADS": mkl} if mkl else {})}
    intra = 1 if name == "one" else threads
    label = f"{compute_type} {isa} {intra} thread{'s' if intra > 1 else ''}" + (" MKL 1" if mkl and intra > 1 else "")
    return {"compute_type": compute_type, "threads": intra, "env": extra, "label": label}


def ct2_settings(systems: list[str], job: dict, work: Path) -> dict:
    """For each CTranslate2 system of the run, its fastest candidate settings on the run's first
    lines (best of 2 repetitions each); under --isa avx2 its ISA stays AVX2."""
    chosen = {}
    for system in (s for s in systems if s in CT2_CANDIDATES):
        probe, lines = dict(job, repeat=2), 0
        probe["batches"] = []
        for batch in job["batches"]:
            if lines >= PROBE_LINES:
                break
            probe["batches"].append(batch)
            lines += len(batch)
        timed, labels = [], set()
        for compute_type, isa, threading in CT2_CANDIDATES[system]:
            settings = ct2_candidate(compute_type, isa, threading, job["threads"])
            if (job["isa"] == "avx2" and isa != "AVX2") or settings["label"] in labels:
                continue
            labels.add(settings["label"])
            result = run_worker(system, dict(probe, ct2_settings={system: settings}), work)
            if "error" not in result:
                timed.append((result["seconds"], settings))
                print(f"  CTranslate2 settings: {system} {settings['label']}: {result['seconds']:.3f} s "
                      f"({lines} lines)", file=sys.stderr, flush=True)
        if timed:
            chosen[system] = min(timed, key=lambda t: t[0])[1]
    return chosen


def take_turns(systems: list[str], job: dict, work: Path, rounds: int, label: str) -> dict:
    """Each system's results after `rounds` turns (every system once a round, each in a fresh
    process); a system that failed is not run again."""
    results: dict[str, dict] = {}
    for turn in range(rounds):
        for system in systems:
            if "error" in results.get(system, {}):
                continue
            print(f"  {label}: {system} (round {turn + 1}/{rounds}) …", file=sys.stderr, flush=True)
            results[system] = merge_rounds(results.get(system), run_worker(system, job, work), system)
    return results


# ---------------------------------------------------------------- workers (one process per system)

def _fairseq(job):
    import torch

    from parity.fairseq_hub import generate, load_hub, model_input, text_ids

    hub = load_hub(job["fairseq_dir"], job["ckpt"], job["source_lang"], job["target_lang"])
    hub.cfg.dataset.max_tokens, hub.cfg.dataset.batch_size = None, job["batch_size"]   # our batches, whole

    def run(batch):
        # a multilingual task puts the language token in itself: it is given the text's ids
        src = [torch.tensor(text_ids(hub, ids)) for ids in batch]
        out = generate(hub, src, beam=BEAM, max_len_b=job["max_len_b"])
        return [h[0]["tokens"].tolist() for h in out], [model_input(hub, s).tolist() for s in src]
    return run


def _transformers(job):
    from parity.peers import transformers_system

    # the harness's own adapter: FSMT or M2M100 with fairseq's options mapped, the target-language token forced
    system = transformers_system(Path(job["converted"]), (job["source_lang"], job["target_lang"]))
    options = {"beam": BEAM, "max_len_b": job["max_len_b"]}

    def run(batch):
        return [hyps[0] for hyps in system.generate(batch, options, job["max_len_b"])], [list(b) for b in batch]
    return run


def _ctranslate2(job, int8: bool = False):
    from parity.peers import CTranslate2System

    # the harness's own adapter: the export's tokenizer, the family's target prefix, the option mapping;
    # the compute type ct2_settings chose (its ISA is in this process's environment)
    name = "ctranslate2-int8" if int8 else "ctranslate2"
    chosen = job.get("ct2_settings", {}).get(name, {})
    system = CTranslate2System(Path(job["ct2-int8" if int8 else "ct2"]), (job["source_lang"], job["target_lang"]),
                               threads=chosen.get("threads", job["threads"]),
                               compute_type=chosen.get("compute_type", "int8" if int8 else "float32"))
    options = {"beam": BEAM, "max_len_b": job["max_len_b"]}

    def run(batch):
        return [hyps[0] for hyps in system.generate(batch, options, job["max_len_b"])], [list(b) for b in batch]
    return run


def _port(job, variant):
    import torch

    from porting.generation.beam import generate, left_pad
    from porting.generation.options import GenerationOptions
    from porting.model.load import load_ensemble
    from porting.translator import runtime_ensemble

    dtype = torch.bfloat16 if variant == "port-bf16" else torch.float32
    _, members = load_ensemble(Path(job["converted"]), dtype)
    # as `porting translate` runs it; int8: the products that gain (on the small models none), int8-all: every one
    quantize = variant.removeprefix("port-") if variant in ("port-int8", "port-int8-all") else None
    ensemble = runtime_ensemble(members, "exact" if variant == "port-exact" else "fast", quantize)
    opts = GenerationOptions(beam=BEAM, max_len_b=job["max_len_b"])

    def run(batch):
        hyps = generate(ensemble, left_pad(batch), opts, None, (job["start"][0], tuple(job["start"][1])))
        return [h[0].tokens for h in hyps], [list(b) for b in batch]
    return run


def worker(system: str, job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    runner = {"fairseq": _fairseq, "transformers": _transformers, "ctranslate2": _ctranslate2,
              "ctranslate2-int8": lambda job: _ctranslate2(job, int8=True)}.get(system)
    run = runner(job) if runner else _port(job, system)
    ids = job["ids"]
    batches = [[ids[i] for i in b] for b in job["batches"]]
    run(batches[0])                                                   # warm-up, not timed
    times = []
    for _ in range(job["repeat"]):
        hyps, fed = [], []
        start = time.perf_counter()
        for batch in batches:
            h, f = run(batch)
            hyps += h
            fed += f
        times.append(time.perf_counter() - start)
    # the fastest repetition: the least disturbed by other work on a shared machine
    return {"seconds": min(times), "all_seconds": times, "hypotheses": hyps, "fed": fed,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


# ---------------------------------------------------------------- report

def table(rows: list[dict]) -> str:
    head = (f"{'model':<11} {'batch':>5} {'system':<17} {'sent/s':>8} {'tok/s':>9} {'peak RSS GB':>11} "
            f"{'ours / it':>9} {'= fairseq':>10} {'BLEU':>6}  settings")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<11} {r['batch']:>5} {r['system']:<17} failed: {r['error']}")
            continue
        lines.append(f"{r['model']:<11} {r['batch']:>5} {r['system']:<17} {r['sent_s']:>8.2f} {r['tok_s']:>9.1f} "
                     f"{r['peak_rss'] / 1e9:>11.2f} {r['speedup_of_port']:>8.2f}x {r['agree']:>4}/{r['lines']:<5} "
                     f"{r['bleu'] if 'bleu' in r else '-':>6}  {r.get('settings', '')}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="shipped,m2m,wmt19-size")
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lines", type=int, help="override the number of lines per run")
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions per system and round")
    ap.add_argument("--rounds", type=int, default=2,
                    help="the systems take turns this many times; a system's fastest repetition over all counts")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="native: every library picks its own instruction set (none inherited from this shell); "
                         "avx2: all of them held to AVX2 (torch, MKL, oneDNN, CTranslate2, the port's kernels)")
    ap.add_argument("--work", type=Path, default=ROOT / ".build" / "bench")
    ap.add_argument("--out", type=Path, help="results as JSON (default: WORK/speed.json)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args()


def conditions(threads: int) -> dict:
    """What every number of a run depends on, printed and stored with it (like sacreBLEU's signatures)."""

    from importlib import metadata

    from parity.record import versions
    from porting.kernels import build, int8, native

    # the CPU's model name: ratios between systems move with it (AVX-512's width, VNNI, AMX)
    return {"threads": threads, "beam": BEAM, "cpu": build.cpuinfo("model name") or "unknown", **versions(),
            "ctranslate2": metadata.version("ctranslate2"),
            "native_kernels": native.describe(),
            "port_int8": f"{int8.FEW_ROWS_ENGINE}<{int8.MANY_ROWS}rows<={int8.MANY_ROWS_ENGINE}"}


def rows_of(results: dict, model: str, bs: int, ids: list, job: dict, tok, references: list[str]) -> list[dict]:
    """One row per system of one (model, batch size) run, checked to have been fed the same inputs."""
    from porting.evaluation.scoring import score

    line_order = [i for b in job["batches"] for i in b]
    expected = [ids[i] for i in line_order]
    refs = [references[i] for i in line_order]
    reference = results.get("fairseq", {}).get("hypotheses")
    rows = []
    for system, r in results.items():
        row = {"model": model, "batch": bs, "system": system, "lines": len(ids)}
        if system in job.get("ct2_settings", {}):
            row["settings"] = job["ct2_settings"][system]["label"]
        if "error" in r:
            rows.append({**row, "error": r["error"]})
            print(r.get("log", ""), file=sys.stderr)
            continue
        if r["fed"] != expected:
            raise SystemExit(f"{system} was fed different inputs than the others ({model}, batch {bs})")
        tokens = sum(map(len, r["hypotheses"]))
        if model != "wmt19-size":   # the wmt19-size weights are untrained: BLEU would mean nothing
            row["bleu"] = round(score([tok.decode(h) for h in r["hypotheses"]], refs).bleu, 2)
        row.update(seconds=r["seconds"], all_seconds=r["all_seconds"],
                   sent_s=len(ids) / r["seconds"], tok_s=tokens / r["seconds"],
                   peak_rss=r["peak_rss"], target_tokens=tokens,
                   agree=sum(a == b for a, b in zip(r["hypotheses"], reference)) if reference else -1)
        rows.append(row)
    ours = next((r["tok_s"] for r in rows if r["system"] == "port" and "error" not in r), float("nan"))
    for row in rows:
        if "error" not in row:
            row["speedup_of_port"] = ours / row["tok_s"]
    return rows


def main() -> None:
    args = parse_args()
    if args.worker:
        args.result.write_text(json.dumps(worker(args.worker, json.loads(args.job.read_text()))))
        return

    hold_isa(args.isa)
    from parity import shipped
    from porting.tokenizer import open_tokenizer

    systems = args.systems.split(",")
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if "fairseq" in systems:
        systems = ["fairseq"] + [s for s in systems if s != "fairseq"]   # the reference for agreement
    setups = model_setups(args.work)
    signature = {**conditions(args.threads), "isa": args.isa}
    rows = []
    print(f"{'|'.join(f'{k}:{v}' for k, v in signature.items())}\n"
          f"fp32 unless named; ours / it = our port's tokens/s over that system's (>1: ours is faster)\n")
    for model in args.models.split(","):
        setup = setups[model]
        paths = prepare(model, setup, args.work)
        source, references = shipped.test_set(paths["source_lang"], paths["target_lang"])
        tok = open_tokenizer(Path(paths["converted"]), source_lang=paths["source_lang"], target_lang=paths["target_lang"])
        for bs in map(int, args.batch_sizes.split(",")):
            ids = [tok.encode(line) for line in source[:args.lines or setup["lines"][bs]]]
            job = {**paths, "ids": ids, "batches": batches_of(ids, bs), "batch_size": bs, "threads": args.threads,
                   "max_len_b": setup["max_len_b"], "repeat": args.repeat, "start": [tok.bos, list(tok.prefix)],
                   "isa": args.isa}
            job["ct2_settings"] = ct2_settings(systems, job, args.work)
            results = take_turns(systems, job, args.work, args.rounds, f"{model} batch {bs}")
            rows += rows_of(results, model, bs, ids, job, tok, references)
    print(table(rows))
    out = args.out or args.work / "speed.json"
    out.write_text(json.dumps({"conditions": signature, "threads": args.threads, "beam": BEAM, "rows": rows},
                              indent=1) + "\n")
    print(f"\nresults in {out}")


if __name__ == "__main__":
    main()

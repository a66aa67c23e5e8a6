"""Building porting/kernels/skinny.c, skinny_candidates.c and skinny_search.c into a shared library, and
the cache it is kept in.

Compiled on first use with the machine's C compiler (cc, or $CC) into ``$PORTING_CACHE`` (default
``$XDG_CACHE_HOME/porting-workbench`` or ``~/.cache/porting-workbench``), under a name hashed
from the sources, the flags and the compiler's path and version, so that a changed source or
compiler is rebuilt. A library is compiled code that this process will run: it is loaded only
from a directory this user owns and nobody else can write (created 0700; another owner, or group
or world write permission, turns the kernels off with that reason). It is written under a
temporary name and then renamed, so concurrent first uses never see a half-written library.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
SOURCES = (HERE / "skinny.c", HERE / "skinny_candidates.c", HERE / "skinny_search.c")
HEADERS = (HERE / "skinny_tiles.h", HERE / "skinny_abi.h")
# C11 for _Generic (skinny_signatures); an ISO mode, so the compiler never fuses a * b + c on its own
# (-ffp-contract=off): every fused multiply-add is one the source asks for
FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC")
# The instruction sets the sources are built for, each its own library: the same C, whose product
# tile is wider under AVX-512 (skinny_tiles.h) and sums in the same order, so both give the same bits.
ISA_FLAGS = {"avx2": ("-mavx2", "-mfma"), "avx512": ("-mavx2", "-mfma", "-mavx512f")}
ISA_VARIABLE = "PORTING_NATIVE_ISA"     # avx2 or avx512: hold the kernels to one (the AVX2 tables, tests)


class Unavailable(RuntimeError):
    """Why the compiled kernels cannot be used here (torch's kernels stand in)."""


def cache_dir() -> Path:
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("PORTING_CACHE") or xdg / "porting-workbench") / "native"


def _private_dir(path: Path) -> None:
    """Create `path` (and missing parents) 0700, then refuse it unless this user owns it and neither
    group nor others may write to it: a library loaded from there runs as this user."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as e:
        raise Unavailable(f"cannot create the kernel cache {path}: {e}") from e
    if info.st_uid != os.getuid():
        raise Unavailable(f"the kernel cache {path} belongs to another user (uid {info.st_uid}); "
                          "set PORTING_CACHE to a directory of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Unavailable(f"the kernel cache {path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                          "chmod go-w it or set PORTING_CACHE to a private directory")


def compiler() -> str:
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not found:
        raise Unavailable("no C compiler (cc, gcc or clang) on PATH")
    return found


@functools.cache
def compiler_version(cc: str) -> str:
    """The compiler's first --version line: part of the library's name, so an upgraded compiler rebuilds."""
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"the C compiler {cc} does not run: {e}") from e
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else cc


def check_machine() -> str:
    """The instruction set to build for: the widest this CPU runs, as torch sees it (so a process held
    to AVX2 by ATEN_CPU_CAPABILITY=avx2 runs the AVX2 build), or the one PORTING_NATIVE_ISA names."""
    if os.environ.get("PORTING_NATIVE", "1") == "0":
        raise Unavailable("disabled by PORTING_NATIVE=0")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise Unavailable(f"needs an x86-64 CPU, this is {platform.machine()}")
    capability = cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        raise Unavailable(f"needs AVX2 and FMA; torch reports this CPU as {capability}")
    asked = os.environ.get(ISA_VARIABLE, "").lower()
    if asked and asked not in ISA_FLAGS:
        raise Unavailable(f"{ISA_VARIABLE}={asked}: expected one of {', '.join(ISA_FLAGS)}")
    # asked for by name, AVX-512 needs only the CPU's flag (torch may be held to AVX2 in the same process)
    if asked == "avx512" and "avx512f" not in cpu_flags():
        raise Unavailable(f"{ISA_VARIABLE}=avx512, but this CPU has no AVX-512 (no avx512f in /proc/cpuinfo)")
    return asked or capability.lower()


# the flags ATen wants for each of its CPU capabilities (aten/src/ATen/native/DispatchStub.cpp)
ATEN_FLAGS = {"AVX512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"}, "AVX2": {"avx2", "fma"}}


def cpu_capability() -> str:
    """The CPU capability torch dispatches its kernels for ("AVX512", "AVX2", "DEFAULT"...): torch's own
    answer where torch is already imported; else the same rule from the CPU's flags and
    ATEN_CPU_CAPABILITY (a process that never imports torch: porting/lean.py)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].backends.cpu.get_cpu_capability()
    widest = next((name for name, flags in ATEN_FLAGS.items() if flags <= cpu_flags()), "DEFAULT")
    held = os.environ.get("ATEN_CPU_CAPABILITY", "").upper()
    order = [*ATEN_FLAGS, "DEFAULT"]
    if held in order and order.index(held) > order.index(widest):       # held to a narrower one
        return held
    return widest


def cpuinfo(field: str) -> str | None:
    """The first CPU's `field` as Linux's /proc/cpuinfo gives it ("flags", "model name"), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo cannot be read)."""
    return frozenset((cpuinfo("flags") or "").split())


def library(isa: str | None = None) -> Path:
    """The compiled library for `isa` (default: check_machine's), built now if the cache does not hold
    it; Unavailable says why not."""
    chosen = check_machine()
    isa = isa or chosen
    cc = compiler()
    flags = (*FLAGS, *ISA_FLAGS[isa])
    text = b"".join(f.read_bytes() for f in (*SOURCES, *HEADERS))
    key = hashlib.sha256(text + repr((flags, cc, compiler_version(cc))).encode()).hexdigest()[:16]
    directory = cache_dir()
    _private_dir(directory)
    lib = directory / f"skinny-{isa}-{key}.so"
    if lib.exists():
        return lib
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".skinny-", suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, *map(str, SOURCES), "-o", tmp, "-lm"], capture_output=True, text=True)
        if done.returncode:
            raise Unavailable(f"{cc} could not compile {' '.join(f.name for f in SOURCES)}: "
                              f"{done.stderr.strip()[-800:]}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib

"""Output directories written all at once or not at all."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


class OutputExists(Exception):
    pass


def check_writable(out: Path, force: bool) -> str | None:
    if out.exists() and not force:
        return f"{out} exists; pass --force to replace it"
    if out.exists() and not out.is_dir() and force:
        return f"{out} exists and is not a directory"
    return None


@contextlib.contextmanager
def atomic_dir(out: str | Path, force: bool = False):
    """Yield a temporary directory beside `out`; on success it replaces `out` by rename, on any
    failure it is removed and `out` is left exactly as it was."""
    out = Path(out)
    problem = check_writable(out, force)
    if problem:
        raise OutputExists(problem)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new directory
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_file_atomic(path: str | Path, write, force: bool = False) -> None:
    """Single-file variant: `write(tmp_path)` fills a temporary sibling that is then renamed."""
    path = Path(path)
    problem = check_writable(path, force) if path.is_dir() else (
        None if force or not path.exists() else f"{path} exists; pass --force to replace it")
    if problem:
        raise OutputExists(problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

"""Output directories written all at once or not at all, and never at the cost of what the user owns.

  * A directory is written under a temporary sibling (``.OUT.tmp-PID-XXXX``) and renamed into place;
    a failure removes the temporary and leaves the old output exactly as it was.
  * ``--force`` replaces only an earlier output of the workbench, recognised by its marker file
    (``MARKER``), and never a directory that holds an input of the run: anything else is refused
    with the reason, nothing deleted.
  * One writer per output path: a lock file beside it (``.OUT.lock``, removed when the writer is
    done) is taken without waiting; a second writer gets a clear error.
  * What an interrupt leaves is cleaned up by the next run under the same lock: temporaries of
    processes that no longer run are removed (said on the log), and an old output set aside by a
    replacement whose second rename never happened (``.OUT.old-PID-XXXX``) is put back.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

MARKER = ".porting-workbench"          # written into every output directory of the workbench
log = logging.getLogger(__name__)


class OutputExists(Exception):
    pass


def is_our_output(path: Path) -> bool:
    """Marked as ours, or a conversion written before the marker existed (its provenance names
    the converter)."""
    if (path / MARKER).is_file():
        return True
    try:
        return "converter" in json.loads((path / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _holds(directory: Path, inputs: list[Path]) -> list[Path]:
    """The inputs that are `directory` or lie inside it."""
    root = directory.resolve()
    return [p for p in inputs if p.resolve() == root or root in p.resolve().parents]


def check_writable(out: Path, force: bool, inputs: list[Path] = ()) -> str | None:
    """Why `out` cannot be written, or None."""
    if held := _holds(out, list(inputs)):
        return f"--out {out} holds an input of this run ({held[0]}): choose another output directory"
    if not out.exists():
        return None
    if not force:
        return f"{out} exists; pass --force to replace it"
    if not out.is_dir():
        return f"{out} exists and is not a directory"
    if not is_our_output(out):
        return (f"{out} exists and is not an output of the workbench (no {MARKER} in it): --force replaces only "
                "those; remove it yourself if it is yours to remove")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(out: Path, kind: str) -> list[tuple[Path, int]]:
    """Hidden siblings `.OUT.<kind>-PID-XXXX` and their writers' process ids."""
    found = []
    for p in out.parent.glob(f".{out.name}.{kind}-*"):
        pid = p.name[len(f".{out.name}.{kind}-"):].split("-", 1)[0]
        if pid.isdigit():
            found.append((p, int(pid)))
    return found


def recover(out: Path) -> None:
    """Under the lock: put back an output set aside by an interrupted replacement, remove dead
    writers' temporaries."""
    for old, pid in _leftovers(out, "old"):
        if _pid_alive(pid) and pid != os.getpid():
            continue
        if not out.exists():
            old.rename(out)
            log.warning("%s: put back the earlier output an interrupted replacement had set aside", out)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp, pid in _leftovers(out, "tmp"):
        if not _pid_alive(pid):
            if tmp.is_dir():                         # a directory's temporary, or a single file's
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            log.warning("%s: removed %s, left by an interrupted run (process %d)", out, tmp.name, pid)


@contextlib.contextmanager
def output_lock(out: Path):
    """The one writer of `out`, or OutputExists at once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    while True:
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputExists(f"{out}: another process is writing it right now; try again when it is done") from None
        try:                          # the file may have been removed by the writer before us: lock the current one
            same = os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        recover(out)
        yield
    finally:
        lock.unlink(missing_ok=True)              # while still held: a waiting writer re-checks the inode
        handle.close()


def _mark(directory: Path, kind: str) -> None:
    (directory / MARKER).write_text(json.dumps({"written_by": "porting-workbench", "kind": kind}) + "\n")


@contextlib.contextmanager
def atomic_dir(out: str | Path, force: bool = False, inputs: list[Path] = (), kind: str | None = "output"):
    """Yield a temporary directory beside `out`; on success it replaces `out` by rename (marked as
    the workbench's with `kind`; None: the caller's files mark it, as a conversion's provenance.json
    does), on any failure it is removed and `out` is left exactly as it was."""
    out = Path(out)
    with output_lock(out):
        if problem := check_writable(out, force, inputs):        # again, now that this run holds the lock
            raise OutputExists(problem)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new directory
        try:
            yield tmp
            if kind is not None:
                _mark(tmp, kind)
            _swap_in(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _swap_in(tmp: Path, out: Path) -> None:
    """tmp becomes out; an old out is set aside first and removed after, or put back if the second
    rename fails (an interrupt in between: the next run's ``recover`` puts it back too)."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}")
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_file_atomic(path: str | Path, write, force: bool = False, inputs: list[Path] = ()) -> None:
    """Single-file variant: `write(tmp_path)` fills a temporary sibling that is then renamed. With
    --force it replaces a file (never a directory, never an input)."""
    path = Path(path)
    with output_lock(path):
        if held := _holds(path, list(inputs)):
            raise OutputExists(f"{path} is an input of this run ({held[0]}): choose another output")
        if path.is_dir():
            raise OutputExists(f"{path} is a directory; give a file name")
        if path.exists() and not force:
            raise OutputExists(f"{path} exists; pass --force to replace it")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                    # mkstemp makes it private: honour the umask
        try:
            write(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

"""Reading what a checkpoint's pickle names without building any of it: the storages it declares
(their sizes) and the globals it asks for.

Before a zip checkpoint is memory-mapped: does every storage record hold the bytes its pickle
says it holds?

torch's memory-mapped load (``torch.load(mmap=True)``) maps each storage at its record's offset in
the file and trusts the size the pickle declares: a record cut short inside a valid zip is filled
with whatever bytes follow it (other records, the zip directory), silently. A plain load would
refuse it ("record size ... does not match expected size") but reads everything into memory,
optimizer state included, which is what mapping avoids. So the declared sizes are read here first
and compared with the records' real sizes.

Written by hand because no library reads a pickle's persistent ids without constructing what it
names: the pickle is walked by a ``pickle.Unpickler`` whose every global is an inert stand-in (no
code of the file's choosing runs, and nothing is built from it but these stand-ins), and whose
persistent ids, torch's ``('storage', storage type, key, location, numel)``, are collected.

When torch's restricted unpickler refuses a file for an opcode rather than a global (protocol 0's
INST, for one), the same walk names the globals the file asks for, so a refusal always says what
was asked.
"""
from __future__ import annotations

import io
import pickle
import warnings
import zipfile

import torch

_UNTYPED = 1   # UntypedStorage counts bytes


class _Inert:
    """Whatever the pickle asks to build: accepts every call, item and state, does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Scanner(pickle.Unpickler):
    def __init__(self, stream: io.BytesIO):
        super().__init__(stream)
        self.declared: dict[str, int] = {}         # record key -> bytes the pickle says it holds
        self.globals: list[str] = []               # every global asked for, in order

    def find_class(self, module: str, name: str):
        self.globals.append(f"{module}.{name}")
        return type(name, (_Inert,), {"qualified": f"{module}.{name}"})

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
            _, storage_type, key, _location, numel = pid
            self.declared[str(key)] = max(self.declared.get(str(key), 0), int(numel) * _element_size(storage_type))
        return _Inert()


def _element_size(storage_type) -> int:
    """Bytes per element of a storage class named in the pickle (torch.FloatStorage, ...)."""
    name = getattr(storage_type, "qualified", "").rsplit(".", 1)[-1]
    if name == "UntypedStorage":
        return _UNTYPED
    legacy = getattr(torch, name, None) if name.endswith("Storage") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # "TypedStorage is deprecated"
        dtype = getattr(legacy, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"storage of unknown type {name!r}")
    return torch.empty((), dtype=dtype).element_size()


def short_records(path) -> list[str]:
    """Every storage record of a zip checkpoint that holds fewer bytes than its tensors need."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        reader = _Scanner(io.BytesIO(z.read(pickles[0])))
        try:
            reader.load()
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise ValueError(f"data.pkl does not unpickle ({type(e).__name__}: {e})") from None
        sizes = {info.filename: info.file_size for info in z.infolist()}
    problems = []
    for key, need in sorted(reader.declared.items()):
        record = f"{prefix}data/{key}"
        have = sizes.get(record)
        if have is None:
            problems.append(f"storage {key}: no record {record} in the archive")
        elif have < need:
            problems.append(f"storage {key}: record {record} holds {have} bytes, its tensors need {need}")
    return problems


def globals_named(path) -> list[str]:
    """The globals a checkpoint's pickles ask for (a zip's data.pkl, or the pickles a legacy file
    starts with), in order, as far as they can be read."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            streams = [z.read(n) for n in z.namelist() if n.endswith("data.pkl")]
    else:
        with open(path, "rb") as f:
            streams = [f.read()]
    found = []
    for data in streams:
        stream = io.BytesIO(data)
        for _ in range(8):                           # a legacy file: a few pickles, then raw storage bytes
            scanner = _Scanner(stream)
            try:
                scanner.load()
            except Exception:                        # noqa: BLE001 -- only the names it reached are wanted
                found += scanner.globals
                break
            found += scanner.globals
    return list(dict.fromkeys(found))

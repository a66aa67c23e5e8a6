"""A real en-de parallel corpus, made offline from the gettext catalogs inside Debian packages.

msgid is the English source string, msgstr its human translation. The packages are
fetched with ``apt-get download`` (Debian's registry is reachable here; nothing else is),
unpacked with ``dpkg-deb -x`` and read with the standard library's ``gettext`` parser.
"""
from __future__ import annotations

import gettext
import hashlib
import re
import subprocess
from pathlib import Path

# Packages whose catalogs give tens of thousands of en-de segment pairs: LibreOffice UI
# strings, compiler messages (gcc, binutils) and command-line tools (coreutils, git, util-linux).
PACKAGES = [
    "libreoffice-l10n-de",
    "gcc-12-locales",
    "coreutils",
    "binutils-common",
    "git",
    "util-linux-locales",
]

MAX_WORDS = 50
MAX_CHAR_RATIO = 3.0  # longer / shorter side; beyond this a pair is usually not a translation


def fetch_packages(dest: Path, packages: list[str] = PACKAGES) -> list[Path]:
    """Download and unpack the Debian packages; returns the extracted roots (one per package)."""
    debs = dest / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob("*.deb")):
        subprocess.run(["apt-get", "download", *packages], cwd=debs, check=True)
    roots = []
    for deb in sorted(debs.glob("*.deb")):
        root = dest / "unpacked" / deb.stem
        if not root.exists():
            root.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        roots.append(root)
    return roots


_LIBREOFFICE_MNEMONIC = re.compile(r"[~_](?=\w)")  # "_Overwrite", "~File": keyboard accelerators
_GCC_QUOTE = re.compile(r"%[<>]")  # gcc's %<...%> renders as quotes


def clean(text: str, libreoffice: bool) -> str | None:
    """One catalog string as a sentence, or None when it is not usable as training text."""
    text = text.strip()
    if not text or "\n" in text or "\t" in text:
        return None  # multi-line help screens and tables do not align line by line
    if text.startswith("-"):
        return None  # command-line option listings
    if libreoffice:
        text = _LIBREOFFICE_MNEMONIC.sub("", text)
    text = _GCC_QUOTE.sub("'", text)
    text = re.sub(r"\s+", " ", text)
    if not re.search(r"[^\W\d_]", text):
        return None  # no letters at all
    return text


def read_pairs(roots: list[Path], lang: str) -> dict[str, str]:
    """English -> `lang` pairs from every catalog for `lang`; first translation wins, in path order."""
    pairs: dict[str, str] = {}
    catalogs = sorted(p for root in roots for p in root.rglob(f"{lang}/LC_MESSAGES/*.mo"))
    for path in catalogs:
        libreoffice = "libreoffice" in path.parts
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # msgid -> msgstr, as the parser stores it
        for msgid, msgstr in sorted((k, v) for k, v in catalog.items() if isinstance(k, str)):
            if not msgid or not msgstr:
                continue  # the header entry, untranslated entries
            msgid = msgid.split("\x04", 1)[-1]  # drop the msgctxt
            src, tgt = clean(msgid, libreoffice), clean(msgstr, libreoffice)
            if src is None or tgt is None or src in pairs:
                continue
            ls, lt = len(src.split()), len(tgt.split())
            if ls > MAX_WORDS or lt > MAX_WORDS:
                continue
            if max(len(src), len(tgt)) > MAX_CHAR_RATIO * min(len(src), len(tgt)) + 10:
                continue
            pairs[src] = tgt
    return pairs


def split(pairs: dict[str, str], n_test: int, n_valid: int):
    """Deterministic held-out splits: order by a hash of the source, independent of catalog order."""
    keys = sorted(pairs, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    test, valid, train = keys[:n_test], keys[n_test:n_test + n_valid], keys[n_test + n_valid:]
    return {name: [(s, pairs[s]) for s in part] for name, part in
            (("test", test), ("valid", valid), ("train", train))}

"""The house's boundaries: imports only point down, and the native side never imports the original.

Rooms, from the bottom: `porting` (the on-disk contract and the native runtime), `converters`,
`parity` (the original's side and the harness), and `porting_cli`, the command line, on top. A room
imports from itself or from a room below, never up: the command line may use everything, nothing
uses the command line.

Layers refine the rooms (README "Layout"): within `porting`, the on-disk contract, then the
runtime's parts. A module may import from its own layer or from a lower one; an import that points
up, or sideways to another layer of the same height, fails here. Every import counts, the ones
inside functions too (read from the AST).
"""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import converters
import parity
import porting
import porting_cli

ROOT = Path(__file__).resolve().parents[1]

# the top-level packages, from the bottom
ROOMS = {"porting": 0, "converters": 1, "parity": 2, "porting_cli": 3}

# (module prefix, height); the longest matching prefix decides a module's layer
LAYERS = {
    "porting.format": 0,
    "porting.files": 0,
    "porting.progress": 0,        # the one progress display (a bar on a terminal, lines elsewhere)
    "porting.model": 1,
    "porting.tokenizer": 1,
    "porting.kernels": 2,
    "porting.generation": 3,
    "porting.translation": 4,     # lines <-> Translations, without torch: what every runtime shares
    "porting.translator": 5,      # the runtime on torch
    "porting.lean": 5,            # the runtime without torch (the start-up path)
    "porting.engine": 6,          # where translation runs: this process, a process pool, Ray
    "porting.evaluation": 7,
    "porting": 8,                 # the package itself: its version, and `from porting import Translator`
    "converters": 9,              # the package itself
    "converters.io": 9,
    "converters.fairseq": 10,
    "converters.ctranslate2": 10,     # our directories into CTranslate2 models
    "parity": 11,
    "porting_cli": 12,            # the command line: a room of its own, above everything
}


def layer_of(module: str) -> str | None:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def imports_of(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in a module's source, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            # `from pkg import mod` imports pkg.mod when that is a module of ours
            found += [(node.lineno, f"{base}.{a.name}" if layer_of(f"{base}.{a.name}") and _is_module(f"{base}.{a.name}")
                       else base) for a in node.names]
    return found


def _is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(module: str, source: str) -> list[str]:
    here = layer_of(module)
    out = []
    for line, target in imports_of(source, module):
        there = layer_of(target)
        if here is None or there is None or there == here:
            continue
        if LAYERS[there] >= LAYERS[here]:
            way = "up" if LAYERS[there] > LAYERS[here] else "sideways"
            out.append(f"{module}:{line} imports {target}: {way} from {here} ({LAYERS[here]}) to {there} ({LAYERS[there]})")
    return out


def our_modules() -> dict[str, Path]:
    out = {}
    for pkg in (porting, converters, parity, porting_cli):
        out[pkg.__name__] = Path(pkg.__file__)
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            spec = m.module_finder.find_spec(m.name.rsplit(".", 1)[-1])
            out[m.name] = Path(spec.origin)
    return out


def test_every_module_has_a_layer():
    assert [m for m in our_modules() if layer_of(m) is None] == []


def room_violations(module: str, source: str) -> list[str]:
    here = ROOMS[module.split(".")[0]]
    return [f"{module}:{line} imports {target}: up from room {module.split('.')[0]} to {target.split('.')[0]}"
            for line, target in imports_of(source, module)
            if ROOMS.get(target.split(".")[0], -1) > here]


def test_every_module_lives_in_a_room():
    assert sorted({m.split(".")[0] for m in our_modules()}) == sorted(ROOMS)


def test_rooms_only_import_down():
    found = [v for name, path in our_modules().items() for v in room_violations(name, path.read_text(encoding="utf-8"))]
    assert found == [], "\n".join(found)


def test_an_upward_import_between_rooms_is_caught():
    assert room_violations("porting.translator", "def f():\n    import porting_cli.common\n") == [
        "porting.translator:2 imports porting_cli.common: up from room porting to porting_cli"]
    assert room_violations("parity.harness", "from porting_cli import main\n")[0].startswith("parity.harness:1")
    assert room_violations("converters.fairseq.card", "from parity.contract import Hyp\n") != []
    assert room_violations("porting_cli.parity", "import parity.harness\nimport porting.format\n") == []


def test_imports_only_point_down():
    found = [v for name, path in our_modules().items() for v in violations(name, path.read_text(encoding="utf-8"))]
    assert found == [], "\n".join(found)


def test_an_upward_import_is_caught():
    """The check fails on what it is meant to catch: a planted upward import (the runtime's model
    reaching up into the converters), a sideways one, and one hidden inside a function."""
    planted = "import torch\nfrom converters.fairseq.arch import Architecture\n"
    assert violations("porting.model.transformer", planted) == [
        "porting.model.transformer:2 imports converters.fairseq.arch: up from porting.model (1) to converters.fairseq (10)"]
    sideways = "from porting.tokenizer import Tokenizer\n"
    assert "sideways" in violations("porting.model.load", sideways)[0]
    hidden = "def f():\n    from porting_cli.common import load_translator\n"
    assert violations("parity.harness", hidden)[0].startswith("parity.harness:2 imports porting_cli.common: up")
    assert violations("porting_cli.translate", "from parity import names\nimport converters.io.atomic\n") == []


def test_native_packages_do_not_import_fairseq():
    modules = [m for m in our_modules() if not m.startswith(("parity", "porting_cli"))]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fairseq', 'fairseq_cli'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_parser_needs_neither_fairseq_nor_torch():
    """--help stays quick, and torch's (and numpy's) start-up is left to main, which runs it with
    interrupts held (porting_cli.import_holding_interrupts)."""
    code = ("import sys\nfrom porting_cli import build_parser\nbuild_parser()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fairseq', 'torch', 'numpy'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """module -> the modules of ours it imports (every import, the ones inside functions too)."""
    graph = {}
    for name, source in modules.items():
        targets = {t for _, t in imports_of(source, name)}
        graph[name] = {max((m for m in modules if t == m or t.startswith(m + ".")), key=len)
                       for t in targets if any(t == m or t.startswith(m + ".") for m in modules)} - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that reaches itself again, with one path round (depth-first, each circle once)."""
    found, done = [], set()

    def visit(node, path):
        if node in path:
            circle = path[path.index(node):]
            if not any(set(circle) == set(c) for c in found):
                found.append(circle + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        done.add(node)
    for node in sorted(graph):
        visit(node, [])
    return found


def test_no_circles_between_modules():
    """Within a layer too, modules import one way: parity's adapters import its contract, its registry
    imports the adapters, never the reverse (issue 28: parity/peers.py and parity/systems.py did)."""
    sources = {name: path.read_text(encoding="utf-8") for name, path in our_modules().items()}
    found = circles(import_graph(sources))
    assert found == [], "\n".join(" -> ".join(c) for c in found)


def test_a_circle_is_caught():
    planted = {"parity.contract": "", "parity.peers": "from parity.contract import Hyp\n",
               "parity.systems": "def f():\n    from parity import peers\n",
               "parity.contract2": "from parity.systems import open_system\n"}
    planted["parity.peers"] += "from parity.systems import KINDS\n"
    found = circles(import_graph(planted))
    assert len(found) == 1 and set(found[0]) == {"parity.peers", "parity.systems"}

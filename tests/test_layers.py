"""Every import in ``src/emberkeep`` points down the layers, and no imports go in a circle.

The layers, bottom to top (docs/design.md, "Layers", which this test keeps true: nothing
below ``config`` reads the config file, nothing below the top knows the CLI):

0. leaves: the package itself (``__version__``), ``errors``, ``clock``, ``durations``,
   ``sizes``, ``fsutil``, ``redact``, ``memory``, ``ui``, ``keys``, ``statefile``,
   ``crypto``, ``crashpoints``
1. ``storage`` (named objects, no format) and ``journal`` (the record of runs)
2. ``repository`` (the format: keys, seals, packs, index, snapshots, leases)
3. ``engine`` (chunk, dedup, compress, encrypt; restore; the events sources hand it)
4. ``sources`` (what is backed up; they yield the engine's events and take plain values)
5. ``config``, ``config_sample``, ``config_doc`` (the config file, read by what runs
   jobs, not by what they run)
6. ``policy`` (schedules, retention, the copies rule, objectives)
7. ``site``, ``seen`` (a loaded config and what it opens; the host's memory of targets)
8. ``monitor`` (status, alerts, metrics, the journal's job records)
9. ``runner`` (each job; the scheduler)
10. ``cli``, ``__main__``, ``demo``, ``web`` (the commands and the dashboard)

A module may import from its own layer or any below. Every import counts: at module level,
inside a function, under ``if TYPE_CHECKING`` (a type is a dependency too). Circles are
found between modules (``a`` imports ``b`` imports ``a``, at any depth); a package's
``__init__`` importing its own submodules is not a circle through them.

``KNOWN_UPWARD`` and ``KNOWN_CIRCLES`` list what is wrong, each with its reason (today
nothing). A new violation fails, and so does a listed one that no longer occurs: the lists
only shrink.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "emberkeep"

LAYERS: list[set[str]] = [
    {"", "errors", "clock", "durations", "sizes", "fsutil", "redact", "memory", "ui", "keys"}
    | {"statefile", "crypto", "cron", "typedtext", "crashpoints"},
    {"storage", "journal"},
    {"repository"},
    {"engine"},
    {"sources"},
    {"config", "config_sample", "config_doc"},
    {"policy"},
    {"site", "seen"},
    {"monitor"},
    {"runner"},
    {"cli", "__main__", "demo", "web"},
]

# (importer, imported) module pairs that point up, each with why it is still there.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

# Circles between modules (each as its sorted members), with why each is still there.
KNOWN_CIRCLES: dict[tuple[str, ...], str] = {}


def module_name(path: Path) -> str:
    """``engine/backup.py`` -> ``engine.backup``; the package's own ``__init__`` is ``""``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The emberkeep modules ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [_inside(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                origin: str | None = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = _inside(node.module or "")
            if origin is None:
                continue
            submodules = [_join(origin, a.name) for a in node.names]
            targets = [m for m in submodules if m in known]
            if len(targets) < len(node.names):  # names defined in ``origin`` itself
                targets.append(origin)
        else:
            continue
        for target in targets:
            if target is None:
                continue
            while target not in known and target:
                target = target.rpartition(".")[0]
            if target != name and not _is_ancestor(target, name):
                found.add(target)
    return found


def _inside(dotted: str) -> str | None:
    """``emberkeep.x.y`` -> ``x.y``; None for other packages."""
    if dotted == "emberkeep":
        return ""
    return dotted.removeprefix("emberkeep.") if dotted.startswith("emberkeep.") else None


def _join(origin: str, name: str) -> str:
    return f"{origin}.{name}" if origin else name


def _is_ancestor(package: str, module: str) -> bool:
    """Importing from one's own package runs its ``__init__`` first anyway: no edge."""
    return package == "" or module.startswith(package + ".")


def layer(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add {top!r} to LAYERS in this test")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in edges.items() for b in targets if layer(b) > layer(a)}


def test_every_module_is_in_a_layer() -> None:
    for name in modules():
        layer(name)


def test_no_import_points_up_the_layers() -> None:
    found = upward(graph())
    new = sorted(found - KNOWN_UPWARD.keys())
    assert not new, "imports pointing up the layers (see this module's docstring):\n" + "\n".join(
        f"  {a} (layer {layer(a)}) imports {b} (layer {layer(b)})" for a, b in new
    )
    gone = sorted(KNOWN_UPWARD.keys() - found)
    assert not gone, f"fixed, so remove them from KNOWN_UPWARD: {gone}"


def test_no_imports_go_in_a_circle() -> None:
    found = circles(graph())
    new = sorted(found - KNOWN_CIRCLES.keys())
    assert not new, "modules importing each other: " + "; ".join(" <-> ".join(c) for c in new)
    gone = sorted(KNOWN_CIRCLES.keys() - found)
    assert not gone, f"fixed, so remove them from KNOWN_CIRCLES: {gone}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: an upward import inside a function, written relatively, counts."""
    known = {"engine.backup": tmp_path / "backup.py", "runner.site": tmp_path / "site.py"}
    known["engine.backup"].write_text("def f():\n    from ..runner.site import Site\n")
    known["runner.site"].write_text("from ..engine import backup\n")
    edges = {n: imports_of(n, p, known | {"engine": tmp_path / "e"}) for n, p in known.items()}
    assert edges == {"engine.backup": {"runner.site"}, "runner.site": {"engine.backup"}}
    assert upward(edges) == {("engine.backup", "runner.site")}
    assert circles(edges) == {("engine.backup", "runner.site")}


def test_the_layers_are_disjoint() -> None:
    seen: defaultdict[str, int] = defaultdict(int)
    for names in LAYERS:
        for n in names:
            seen[n] += 1
    assert [n for n, count in seen.items() if count > 1] == []

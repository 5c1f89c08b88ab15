"""The package's layers: arrows only point down, one subpackage imports bcc (no kernel)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "profiler"

# Lowest first: a module may import its own layer or any below it, never above.
LAYERS: list[set[str]] = [
    {"errors", "figures", "files", "model", "timings"},
    {"system"},
    {"bpf"},
    {"attribution"},
    {"ledger"},
    {"tax"},
    {"output"},
    {"capture"},
    {"agent"},
    {"doctor", "cli"},
]


def _layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") >= 1 else ""
    for rank, names in enumerate(LAYERS):
        if part in names:
            return rank
    raise AssertionError(f"{module}: not in any layer of this test")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_no_module_imports_from_a_layer_above_it() -> None:
    upward = []
    for module, path in _modules():
        if module == "profiler":
            continue
        mine = _layer(module)
        for imported in _imports(path):
            if not imported.startswith("profiler.") or imported.count(".") < 1:
                continue
            try:
                theirs = _layer(imported)
            except AssertionError:
                continue  # `from profiler import __version__` and the like
            if theirs > mine:
                upward.append(f"{module} -> {imported}")
    assert not upward, upward


def test_only_the_bpf_subpackage_imports_bcc() -> None:
    users = [module for module, path in _modules()
             if any(name == "bcc" or name.startswith("bcc.") for name in _imports(path))]
    assert users and all(module.startswith("profiler.bpf") for module in users), users


def test_at_most_eight_modules_at_the_top() -> None:
    top = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 8, top


def test_bench_imports_no_bcc() -> None:
    bench = PACKAGE.parent / "bench"
    for path in bench.glob("*.py"):
        assert not any(n == "bcc" or n.startswith("bcc.") for n in _imports(path)), path

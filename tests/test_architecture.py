"""Data flows one way: every module imports only from modules of earlier stages (parsed, not imported)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cellseg_tf"

# The pipeline order; a module may import from any module listed before it (never after).
STAGES = [
    "manifest", "io", "pairing", "stacks", "synthetic", "preprocessing", "tiling", "augment", "sampling", "dataset", "expand",
    "models", "losses", "metrics", "config", "visualize", "callbacks", "schedules", "distribute", "training",
    "crossval", "ensemble", "inference", "batch_predict", "instances", "evaluation", "morphometry", "statistics",
    "demo", "cli",
]


def _imports(path: Path) -> set[str]:
    """Sibling modules (first component after `cellseg_tf.`) imported by a package module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cellseg_tf."):
            found.add(node.module.split(".")[1])
    return found


def test_every_module_has_a_stage():
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")} | {"models"}
    assert modules == set(STAGES), f"place new modules in STAGES: {sorted(modules ^ set(STAGES))}"


def test_imports_only_flow_forward():
    order = {name: i for i, name in enumerate(STAGES)}
    bad = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem.startswith("__"):
            continue
        for dep in _imports(path):
            if dep in order and order[dep] >= order[path.stem]:
                bad.append(f"{path.stem} imports {dep}")
    for path in sorted((PACKAGE / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                bad.append(f"models/{path.name} imports a later package module {node.module}")
    assert not bad, bad

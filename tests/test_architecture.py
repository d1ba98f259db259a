"""Data flows one way: sub-packages, and modules inside each, import only from earlier stages (parsed, not imported)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cellseg_tf"

# The pipeline: sub-packages in order, each with its modules in order. A module may import from any module listed
# before it (in its own sub-package or an earlier one), never after. `models` is one stage for the outside world;
# inside it the usual sibling rules of a small package apply (checked by `test_models_import_nothing_later`).
STAGES: list[tuple[str, list[str]]] = [
    ("common", ["files", "visualize"]),
    ("data", ["manifest", "tiff", "io", "pairing", "stacks", "synthetic", "preprocessing", "tiling", "targets",
              "augment", "sampling", "dataset", "expand", "patches"]),
    ("models", ["*"]),
    ("training", ["loss_functions", "losses", "metrics", "config", "callbacks", "schedules", "distribute", "engine", "crossval"]),
    ("predict", ["options", "ensemble", "matching", "instance_params", "instances", "inference", "tuning",
                 "batch_predict"]),
    ("fewshot", ["*"]),
    ("analysis", ["evaluation", "morphometry", "statistics"]),
    ("", ["demo", "cli_args", "cli"]),
]
SUBPACKAGES = [sub for sub, _ in STAGES if sub]


def _order() -> dict[str, int]:
    """'sub.module' (or 'module' at top level, or 'models') -> position in the pipeline."""
    order, i = {}, 0
    for sub, modules in STAGES:
        for name in modules:
            key = sub if name == "*" else (f"{sub}.{name}" if sub else name)
            order[key] = i
            i += 1
    return order


def _module_key(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts
    if parts[0] in {sub for sub, mods in STAGES if mods == ["*"]}:
        return parts[0]
    return ".".join(parts)


def _dependencies(path: Path) -> set[str]:
    """Keys (as in `_order`) of the package modules a file imports, resolved from relative and absolute imports."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = list(rel[:len(rel) - node.level])
        elif (node.module or "").startswith("cellseg_tf"):
            base = []
        else:
            continue
        module = node.module or ""
        if not node.level:
            module = module.partition(".")[2]
        parts = base + [p for p in module.split(".") if p]
        targets = [parts + [alias.name] for alias in node.names] if node.module is None or not parts else [parts]
        for t in targets:
            if t and t[0] in {sub for sub, mods in STAGES if mods == ["*"]}:
                found.add(t[0])
            elif len(t) >= 2 and t[0] in SUBPACKAGES:
                found.add(f"{t[0]}.{t[1]}")
            elif len(t) == 1:
                found.add(t[0])
    return found


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.stem != "__main__" and p.stem != "__init__")


def test_every_module_has_a_stage():
    order = _order()
    missing = sorted({_module_key(p) for p in _package_files()} - set(order))
    assert not missing, f"place new modules in STAGES: {missing}"
    top = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == set(SUBPACKAGES) & top and top <= set(SUBPACKAGES), f"unknown sub-packages: {top - set(SUBPACKAGES)}"


def test_imports_only_flow_forward():
    order = _order()
    bad = []
    for path in _package_files():
        me = _module_key(path)
        for dep in _dependencies(path):
            if dep in order and dep != me and order[dep] >= order[me]:
                bad.append(f"{path.relative_to(PACKAGE)} imports {dep}")
    assert not bad, bad


def test_models_import_nothing_later():
    bad = []
    for path in sorted((PACKAGE / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level >= 2 or (node.module or "").startswith("cellseg_tf.")):
                target = (node.module or "").split(".")[0 if node.level >= 2 else 1]
                if target not in {"common", "data"}:
                    bad.append(f"models/{path.name} imports a later package module {node.module}")
    assert not bad, bad


def test_resolver_sees_imports():
    """The checker itself: a known forward dependency is found (so a green test means something)."""
    deps = _dependencies(PACKAGE / "analysis" / "evaluation.py")
    assert any(d.startswith("data.") for d in deps)

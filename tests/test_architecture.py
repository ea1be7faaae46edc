"""The package's layering (architecture.md), checked from the source with `ast`, importing nothing.

A module's part is its sub-package (`glm130b/data/x.py` -> data) or, at the top level, its own
name (errors, files, config, cli, and each entry point; `glm130b/__init__.py` is `glm130b`).
"""
from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "glm130b"

BASE = {"errors", "files", "config", "cli"}
LIBRARY = BASE | {"tokenization", "data", "parallel", "model", "quantization", "checkpoint",
                  "generation", "evaluation", "serving", "training", "tools"}
ENTRY_POINTS = {"glm130b", "__main__", "initialize", "pretrain", "generate", "evaluate", "serve",
                "quickstart"}
# part -> the other parts of glm130b it may import (third-party packages aside), lowest first.
ALLOWED = {
    "errors": set(),
    "files": {"errors"},
    "config": {"errors"},
    "cli": {"errors", "config"},
    "tokenization": BASE,
    "data": BASE | {"tokenization"},
    "parallel": BASE,
    "model": BASE | {"parallel"},
    "quantization": BASE | {"parallel", "model"},
    "checkpoint": BASE | {"parallel", "model", "quantization"},
    "generation": BASE | {"tokenization", "parallel", "model"},
    "evaluation": BASE | {"tokenization", "data", "parallel", "model", "generation"},
    "serving": BASE | {"tokenization", "parallel", "model", "generation"},
    "training": BASE | {"tokenization", "data", "parallel", "model", "checkpoint"},
    "tools": LIBRARY - {"tools"},
    **{entry: LIBRARY for entry in ENTRY_POINTS},
    **{entry: LIBRARY | {"initialize"} for entry in ("generate", "evaluate", "serve")},
    "quickstart": LIBRARY | ENTRY_POINTS,
}
# third-party package -> the parts that may not import it at all
NEVER = {"torch": {"tokenization", "data"}}
# third-party package -> the only parts that may import it at module level (not in a function)
MODULE_LEVEL_ONLY = {"deepspeed": {"training"}}
PROJECT_DISTRIBUTIONS = {"torch", "deepspeed", "numpy", "yaml", "sentencepiece", "tqdm",
                         "safetensors", "tensorboard", "fastapi", "uvicorn", "triton", "pydantic"}


def module_name(path: Path, package: Path) -> str:
    """glm130b/data/x.py -> glm130b.data.x; glm130b/data/__init__.py -> glm130b.data."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The part a module of the package lands in: glm130b.data.x -> data, glm130b -> glm130b."""
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


def sources(package: Path):
    for path in sorted(package.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def imports(tree: ast.Module, module: str, is_package: bool, known: set[str]):
    """(line, imported module, at module level) for every import, functions included."""
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name, not in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: start from this module's package, go up level - 1
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    package = package[:len(package) - child.level + 1]
                    base = ".".join(package + ([child.module] if child.module else []))
                for alias in child.names:  # `from a import b` lands in a.b when that is a module
                    sub = f"{base}.{alias.name}"
                    yield child.lineno, sub if sub in known else base, not in_function
            yield from visit(child, inner)
    yield from visit(tree, False)


def import_violations(package: Path) -> list[str]:
    """`path:line: <part> may not import <part> (<module>)` for every import the rules forbid."""
    files = list(sources(package))
    known = {module_name(path, package) for path, _ in files}
    found = []
    for path, tree in files:
        module, where = module_name(path, package), path.relative_to(package.parent)
        part = part_of(module)
        for line, target, module_level in imports(tree, module, path.name == "__init__.py", known):
            top = target.split(".")[0]
            if top == package.name:
                other = part_of(target)
                if other != part and other not in ALLOWED[part]:
                    found.append(f"{where}:{line}: {part} may not import {other} ({target})")
            elif part in NEVER.get(top, ()):
                found.append(f"{where}:{line}: {part} may not import {top} ({target})")
            elif module_level and part not in MODULE_LEVEL_ONLY.get(top, {part}):
                found.append(f"{where}:{line}: {part} may not import {top} at module level "
                             f"({target})")
    return found


def test_package_follows_the_layering():
    parts = {part_of(module_name(path, PACKAGE)) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(ALLOWED), f"parts without rules: {parts - set(ALLOWED)}"
    found = import_violations(PACKAGE)
    assert not found, "\n" + "\n".join(found)


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"glm130b/__init__.py": "", "glm130b/errors.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "glm130b"


FORBIDDEN = ({"glm130b/model/__init__.py": "GLM = 1\n", "glm130b/data/__init__.py": "",
              "glm130b/data/x.py": "from ..model import GLM\n"},
             ["glm130b/data/x.py:1: data may not import model (glm130b.model)"])
IN_FUNCTIONS = ({"glm130b/data/__init__.py": "from .. import model\n",
                 "glm130b/data/corpus.py": "", "glm130b/model/__init__.py": "",
                 "glm130b/tokenization/__init__.py": "",
                 "glm130b/tokenization/t.py":
                     "import os\n\ndef f():\n    from ..data import corpus\n    import torch.nn\n"},
                ["glm130b/data/__init__.py:1: data may not import model (glm130b.model)",
                 "glm130b/tokenization/t.py:4: tokenization may not import data "
                 "(glm130b.data.corpus)",
                 "glm130b/tokenization/t.py:5: tokenization may not import torch (torch.nn)"])
CLEAN = ({"glm130b/config.py": "from .errors import X\n",
          "glm130b/data/__init__.py": "from . import facts\nfrom .. import errors, config\n",
          "glm130b/data/facts.py": "from glm130b.tokenization import get\nimport numpy\n",
          "glm130b/tokenization/__init__.py": "get = 1\n",
          "glm130b/training/t.py": "import deepspeed\nfrom ..data.facts import Y\n",
          "glm130b/checkpoint/c.py": "def f():\n    import deepspeed\n"}, [])


@pytest.mark.parametrize("files, expected", [FORBIDDEN, IN_FUNCTIONS, CLEAN],
                         ids=["forbidden", "relative-in-function", "clean"])
def test_checker_on_a_fake_tree(tmp_path, files, expected):
    assert import_violations(make_tree(tmp_path, files)) == expected


def test_errors_imports_nothing():
    tree = ast.parse((PACKAGE / "errors.py").read_text(encoding="utf-8"))
    imported = [(node.lineno, getattr(node, "module", None) or ast.unparse(node))
                for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert all(module in ("__future__", "typing") for _, module in imported), imported


def test_error_classes_live_in_errors_py():
    defined = {node.name for node in ast.walk(ast.parse((PACKAGE / "errors.py").read_text()))
               if isinstance(node, ast.ClassDef)}

    def is_error(name: str) -> bool:
        builtin = getattr(builtins, name, None)
        return (name.endswith(("Error", "Exception")) or name in defined
                or isinstance(builtin, type) and issubclass(builtin, BaseException))

    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: class {node.name}"
             for path, tree in sources(PACKAGE) if path != PACKAGE / "errors.py"
             for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
             if any(is_error(ast.unparse(base).split(".")[-1]) for base in node.bases)]
    assert not found, "\n" + "\n".join(found)


def test_no_module_name_in_two_parts():
    parts_of: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts_of.setdefault(path.stem, set()).add(part_of(module_name(path, PACKAGE)))
    found = [f"{name}.py in {', '.join(sorted(parts))}" for name, parts in sorted(parts_of.items())
             if len(parts) > 1 and name not in ("__init__", "__main__")]
    assert not found, "\n" + "\n".join(found)


def test_no_module_shadows_a_package():
    found = [f"{path.relative_to(PACKAGE.parent)} shadows the module {path.stem}"
             for path in sorted(PACKAGE.rglob("*.py"))
             if path.stem in sys.stdlib_module_names or path.stem in PROJECT_DISTRIBUTIONS]
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("module", ["glm130b.data.preprocess", "glm130b.tokenization.train",
                                    "glm130b.data.corpus"])
def test_data_tools_start_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"


def namespace_takers(package: Path) -> list[str]:
    """Library functions that take an argparse.Namespace: annotated so, or an `args` read
    as `args.<attr>`. The command-line side (entry points, cli.py, `main`, `parse_args`,
    `add_*`, `check_*`) is exempt."""
    found = []
    for path, tree in sources(package):
        if part_of(module_name(path, package)) in ENTRY_POINTS | {"cli"}:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or \
                    node.name in ("main", "parse_args") or node.name.startswith(("add_", "check_")):
                continue
            params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            annotated = any(p.annotation is not None and "Namespace" in ast.unparse(p.annotation)
                            for p in params)
            reads_args = any(p.arg == "args" for p in params) and any(
                isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id == "args" for n in ast.walk(node))
            if annotated or reads_args:
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {node.name}")
    return found


def test_namespace_checker_on_a_fake_tree(tmp_path):
    package = make_tree(tmp_path, {
        "glm130b/generate.py": "def run(args):\n    return args.x\n",
        "glm130b/data/m.py": "def main(args):\n    return args.x\n\n"
                             "def build(args, tok):\n    return args.x\n\n"
                             "def load(ns: argparse.Namespace):\n    pass\n"})
    assert namespace_takers(package) == ["glm130b/data/m.py:4: build", "glm130b/data/m.py:7: load"]


def test_library_takes_typed_configs():
    found = namespace_takers(PACKAGE)
    assert not found, "\n" + "\n".join(found)

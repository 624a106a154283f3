"""Sizes of cetopt's modules and functions read from the source with :mod:`ast`: lines per module, lines per
function (from ``def`` to its last line, docstring included, decorators not), parameters per function (``self`` and
``cls`` not counted, ``*args``/``**kwargs`` counted as one each). Used by tests/test_code_size.py."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FunctionSize:
    """One function or method: ``where`` is ``path:qualified.name``; ``lines`` and ``parameters`` as above."""

    where: str
    lines: int
    parameters: int


def module_lines(package_dir: Path) -> dict[str, int]:
    """Path (relative to the package's parent) -> number of lines, for every ``.py`` file."""
    root = package_dir.parent
    return {str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines())
            for p in sorted(package_dir.rglob("*.py"))}


def function_sizes(package_dir: Path) -> list[FunctionSize]:
    """Every function and method (nested ones too) with its length and parameter count."""
    root = package_dir.parent
    found: list[FunctionSize] = []

    def visit(node: ast.AST, prefix: str, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                count = len([n for n in names if n not in ("self", "cls")]) + (a.vararg is not None) \
                    + (a.kwarg is not None)
                found.append(FunctionSize(f"{path}:{prefix}{child.name}", child.end_lineno - child.lineno + 1, count))
                visit(child, f"{prefix}{child.name}.", path)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", path)
            else:
                visit(child, prefix, path)

    for path in sorted(package_dir.rglob("*.py")):
        visit(ast.parse(path.read_text(encoding="utf-8")), "", str(path.relative_to(root)))
    return found

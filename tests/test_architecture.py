"""The shape of the house (docs/architecture.md): the libraries never import the application, and the
application uses only what the libraries export in their ``__init__``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import attacks
import neuro

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = {"attacks": set(attacks.__all__), "neuro": set(neuro.__all__)}


def _python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _reaches(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module takes from the libraries: ``from attacks.x import y``
    is ``attacks.x``, ``from attacks import y`` is ``attacks.y``, ``attacks.y.z`` in code is ``attacks.y``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top, _, rest = node.module.partition(".")
            if top in LIBRARIES:
                found += ([(node.lineno, node.module)] if rest else
                          [(node.lineno, f"{top}.{a.name}") for a in node.names])
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names
                      if a.name.partition(".")[0] in LIBRARIES and "." in a.name]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in LIBRARIES:
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


@pytest.mark.parametrize("path", _python_files("robust_kd"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_application_uses_only_what_the_libraries_export(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    beyond = [f"line {line}: {name}" for line, name in _reaches(tree)
              if name.split(".")[1] not in LIBRARIES[name.split(".")[0]]]
    assert not beyond, f"{path.name} reaches past the libraries' __init__: {beyond}"


@pytest.mark.parametrize("package", sorted(LIBRARIES))
def test_the_libraries_never_import_the_application(package):
    for path in _python_files(package):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] + \
            [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
        assert not [m for m in imported if m.partition(".")[0] == "robust_kd"], path


def test_the_check_catches_a_reach_past_the_front_door():
    code = "import attacks\nfrom attacks.fold import fold_for_evaluation\nx = attacks.suites.DEFAULT_EPS\n" \
           "from attacks import evaluate\nimport neuro\nneuro.plots.plot_rdms\n"
    reached = _reaches(ast.parse(code))
    assert (2, "attacks.fold") in reached and (3, "attacks.suites") in reached and (4, "attacks.evaluate") in reached
    assert [name for _, name in reached if name.split(".")[1] not in LIBRARIES[name.split(".")[0]]] == \
        ["attacks.fold", "attacks.suites"]


def test_ruff_finds_nothing():
    """The style of the house (pyproject.toml's [tool.ruff]: line length 120, pyflakes and pycodestyle),
    checked with the tests so that CI runs it."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff is not None, "ruff is not installed: pip install -e '.[test]' installs it (pinned there)"
    found = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert found.returncode == 0, found.stdout[-4000:]

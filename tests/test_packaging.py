"""Packaging: the distribution lists every package folder and ships its data files."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("robust_kd", "attacks", "neuro", "configs"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("robust_kd.configs" if rel == Path("configs") else ".".join(rel.parts))
    assert found == listed


def test_data_and_recipes_are_package_data_and_robustbench_is_not_a_dependency():
    project = _pyproject()
    patterns = project["tool"]["setuptools"]["package-data"]
    assert "embedded/**/*" in patterns["robust_kd.data"] and "**/*.yaml" in patterns["robust_kd.configs"]
    deps = " ".join(project["project"]["dependencies"]).lower()
    assert "robustbench" not in deps and "torchattacks" in deps and "pyautoattack" in deps
    assert project["project"]["scripts"]["robust-kd"] == "robust_kd.cli:main"


def test_libraries_do_not_import_the_application():
    for package in ("attacks", "neuro"):
        for source in (ROOT / package).rglob("*.py"):
            text = source.read_text()
            assert "import robust_kd" not in text and "from robust_kd" not in text, source

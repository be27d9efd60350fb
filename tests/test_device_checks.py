"""The GPU run's script rehearsed on the CPU, as it will run on the device: the project's wheel built
from the tree offline and installed into a folder of its own, every step run outside the source tree
(a device call is minutes long and lent now and then: it must not fail on its set-up)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source_copy(to: Path) -> Path:
    """The files a device call carries (tracked, and untracked but not ignored), without build leftovers."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, to / name)
    return to


def test_the_device_checks_rehearse_on_the_cpu_the_steps_of_the_device(tmp_path):
    source, out = _source_copy(tmp_path / "source"), tmp_path / "out"
    # no carried wheels: the packages the device image lacks are installed here already. The steps' time
    # limits are the device's; a test may share its CPU with anything, so here they are twenty times as long
    # (a step that hangs still ends) and the steps alone are compared, not their speed
    env = {**os.environ, "DEVICE": "cpu", "SMALL": "1", "OUT": str(out), "WHEELS": str(tmp_path / "none"),
           "PYTHON": sys.executable, "PYTHONPATH": "", "SCALE": "20", "BUDGET": "6000"}
    ran = subprocess.run(["bash", str(source / "benchmarks" / "device_checks.sh")], env=env, capture_output=True,
                         text=True, timeout=6600, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    log = (out / "device_checks.log").read_text()
    # the project came from the installed wheel, not from the checkout
    imported = re.search(r"robust_kd from (\S+)", log)
    assert imported and not imported.group(1).startswith((str(ROOT), str(source))), log[:2000]
    rows = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| ") and
            not line.startswith("| step")]
    steps = [row.split("|")[1].strip() for row in rows]
    assert steps[:6] == ["environment", "attack_pgd", "attack_autoattack", "attack_square", "train_jpegdl",
                         "attack_full_size"]
    failed = [row for row in rows if row.split("|")[2].strip() != "0"]
    assert not failed, "\n".join(failed)
    assert list(out.glob("*.json")), "the full-size attack's results come back"
    # every comparison with a reference states the float32 arithmetic it ran in (TF32 would move examples)
    for benchmark in ("PGD benchmark", "AutoAttack standard benchmark", "Square benchmark", "Roofline"):
        header = next(line for line in log.splitlines() if line.startswith(benchmark))
        assert "float32 in IEEE arithmetic" in header, header


def test_a_tree_that_does_not_build_is_said_before_any_step(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    shutil.copy2(ROOT / "benchmarks" / "device_checks.sh", tmp_path / "benchmarks")     # a tree with no project
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    ran = subprocess.run(["bash", str(tmp_path / "benchmarks" / "device_checks.sh")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 2
    assert ran.stderr.splitlines()[0] == ("device_checks: could not build robust-kd's wheel offline (it needs "
                                          "setuptools>=68 and wheel):")
    assert not (tmp_path / "out" / "device_checks.log").exists()

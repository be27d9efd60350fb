"""The README's commands: CI runs exactly its test command, and its main job works (slow)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = _bash_blocks()[1].strip()
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
    assert "torch==2.14.1 torchvision==0.29.1" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_the_readme_main_job_runs_the_quickstart_to_its_report(tmp_path):
    """The README's main job as written (the quickstart, about 4 minutes on 2 cores): it ends with the
    report's path, and its teacher learned well above chance."""
    import json

    main_command = _bash_blocks()[0].strip()
    job = main_command.split("&&")[-1].split()
    assert job[:2] == ["robust-kd", "quickstart"]
    out = tmp_path / "quickstart"
    result = subprocess.run([sys.executable, "-m", "robust_kd.cli", *job[1:], "--out", str(out)],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    report = out / "report" / "report.html"
    assert result.stdout.strip().splitlines()[-1] == f"report: {report}" and report.is_file()
    summary = json.loads((out / "resnet20_seed0" / "summary.json").read_text())
    assert summary["data"] == "embedded" and summary["final_test_accuracy"] > 0.6  # chance: 0.1

"""The benchmark command runs end to end on small sizes (figures are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_durably_benchmarks_produce_every_figure(tmp_path: Path) -> None:
    """`run.py --quick --only durably` prints a table and measures every durably figure."""
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/run.py",
            "--quick",
            "--only",
            "durably",
            "-q",
            "--json",
            str(out),
            "--dir",
            str(tmp_path),
            "--cache",
            str(tmp_path / "cache"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "step checkpoint" in proc.stdout
    results = json.loads(out.read_text())["results"]
    durably = [r for r in results if r["system"] == "durably"]
    assert len(durably) >= 12
    assert [r for r in durably if r["value"] is None] == []

"""The README results table is generated from the benchmark JSON files."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_report_renders_and_checks(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "x.json").write_text(json.dumps({
        "benchmark": "x", "date": "2026-11-30T00:00:00+00:00", "machine": "test box", "command": "x.py",
        "metrics": {"speedup": 2.5, "details": {"a": 1}, "ratio": 1.05, "ratio_ci": [0.77, 1.63]},
        "targets": {"speedup": ">= 2", "ratio": 1.0}, "met": {"speedup": True, "ratio": True}}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n")
    script = ROOT / "benchmarks" / "report.py"
    args = [sys.executable, str(script), "--readme", str(readme), "--results", str(results)]
    assert subprocess.run(args + ["--check"], capture_output=True).returncode == 1
    assert subprocess.run(args, capture_output=True).returncode == 0
    text = readme.read_text()
    assert "| x | speedup | 2.5 | >= 2 | yes | 2026-11-30 | test box |" in text
    assert "| x | ratio | 1.05 [0.77, 1.63] | 1 | yes | 2026-11-30 | test box |" in text  # with its interval
    assert "details" not in text and text.endswith("end\n")
    assert subprocess.run(args + ["--check"], capture_output=True).returncode == 0

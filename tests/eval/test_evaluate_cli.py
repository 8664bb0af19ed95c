"""``crossvis evaluate`` end to end through the CLI entry point."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crossvis.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
ARGS = ["evaluate", "--annotations", str(FIXTURES / "ann_cocovid.json"), "--results", str(FIXTURES / "results.json")]


def test_json_output_is_one_object_with_the_metric_keys(capsys):
    assert main([*ARGS, "--json"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out)
    assert out.strip().count("\n") == 0
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"):
        assert key in metrics
    assert metrics["AP"] == pytest.approx(0.6504950495049505, abs=1e-12) and metrics["APm"] == -1


def test_table_output(capsys):
    assert main([*ARGS, "--per-category"]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "1.0000" in out and "0.6505" in out and "sedan" in out
    assert "fractions" in out and "100.00" not in out  # one scale everywhere: the official fractions


@pytest.mark.parametrize("which", ["--annotations", "--results"])
def test_missing_file_exits_2_with_one_line(tmp_path, which):
    args = list(ARGS)
    args[args.index(which) + 1] = str(tmp_path / "missing.json")
    proc = subprocess.run([sys.executable, "-m", "crossvis", *args, "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.json does not exist" in lines[0]


def test_malformed_results_exit_2(tmp_path, capsys):
    bad = tmp_path / "results.json"
    bad.write_text("[{]")
    args = list(ARGS)
    args[args.index("--results") + 1] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:1:3: malformed JSON in the results file" in err


def test_workers_give_the_same_metrics_and_a_negative_count_is_refused(capsys):
    results = []
    for workers in ("1", "2", "0"):
        assert main([*ARGS, "--json", "--workers", workers]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1] == results[2]
    proc = subprocess.run([sys.executable, "-m", "crossvis", *ARGS, "--workers", "-1"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--workers must be >= 0" in proc.stderr and "Traceback" not in proc.stderr


def test_the_process_ends_at_once_with_its_whole_output(tmp_path):
    """`crossvis evaluate` as a process skips the interpreter's teardown (crossvis.cli.entry): the
    JSON line and the warnings still come out whole, with the right exit status."""
    results = json.loads((FIXTURES / "results.json").read_text())
    results[0]["score"] = 3.0  # a warning on stderr
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    args = [sys.executable, "-m", "crossvis", *ARGS[:-1], str(path), "--json"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) >= {"AP", "AR100"} and "outside [0, 1]" in proc.stderr

"""``python -m sgdlab.train.launch``: torchrun whose failure is one line per failed rank, not
torchrun's traceback through its own code; the replicas' own errors are kept."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from sgdlab.train.distributed import failed
from sgdlab.train.launch import failure_lines

ROOT = Path(__file__).resolve().parents[2]


def test_a_child_failure_reads_one_line_per_rank_the_failed_ones_first(tmp_path):
    recorded = tmp_path / "error.json"
    recorded.write_text(json.dumps({"message": "RuntimeError: boom\n  at line 3",
                                    "timestamp": 5}))
    error = ChildFailedError("sgdlab.train.distributed", {
        0: ProcessFailure(0, 41, -signal.SIGTERM, "<N/A>"),
        1: ProcessFailure(1, 42, 1, str(recorded)),
        2: ProcessFailure(2, 43, -signal.SIGKILL, "<N/A>")})
    assert failure_lines(error) == [
        "torchrun: sgdlab.train.distributed failed:",
        "  rank 1 (pid 42): exit code 1: RuntimeError: boom",
        "  rank 2 (pid 43): killed by SIGKILL",
        "  rank 0 (pid 41): killed by SIGTERM (torchrun stops the other processes once one "
        "fails)"]
    # a rank that exited without recording its error: torchrun's link to its docs is left out
    alone = ChildFailedError("x.py", {0: ProcessFailure(0, 7, 2, "<N/A>")})
    assert failure_lines(alone) == ["torchrun: x.py failed:", "  rank 0 (pid 7): exit code 2"]


def test_a_replica_s_error_is_left_where_torchrun_reads_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    failed("1", "replica 1/2: the data file is gone")
    assert capsys.readouterr().err == ("sgdlab.train.distributed: rank 1: error: replica 1/2: "
                                       "the data file is gone\n")
    written = json.loads((tmp_path / "error.json").read_text())
    assert written["message"] == "replica 1/2: the data file is gone"
    assert ProcessFailure(1, 9, 1, str(tmp_path / "error.json")).message == written["message"]


def test_a_failed_launch_prints_the_replica_s_error_and_the_summary_only(tmp_path):
    # two plain processes: rank 1 fails at once, rank 0 would wait 60 s (torchrun stops it)
    script = tmp_path / "worker.py"
    script.write_text("import os, time\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    raise RuntimeError('replica one broke')\n"
                      "time.sleep(60)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "sgdlab.train.launch", "--nproc-per-node", "2",
                           "--standalone", str(script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    err = done.stderr
    assert "RuntimeError: replica one broke" in err              # the replica's own traceback
    assert "ChildFailedError" not in err and "torch/distributed/run.py" not in err, err
    assert err.count("Traceback") == 1, err
    summary = err[err.index(f"torchrun: {script} failed:"):]    # the last lines printed
    assert re.fullmatch(rf"torchrun: {re.escape(str(script))} failed:\n"
                        r"  rank 1 \(pid \d+\): exit code 1\n"
                        r"  rank 0 \(pid \d+\): killed by SIGTERM \(torchrun stops the other "
                        r"processes once one fails\)\n", summary), summary

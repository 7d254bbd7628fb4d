"""``sgdlab landscape`` demos run end to end and write their outputs."""
import json

import torch

from sgdlab.cli.main import main


def test_escape_and_pde_demos_write_results(tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        assert main(["landscape", "escape", "--out", str(tmp_path / "e"), "--quick",
                     "--threads", "1", "--repetitions", "20", "--iterations", "100"]) == 0
        printed = capsys.readouterr().out
        assert "GLD Hessian" in printed and "success" in printed
        res = json.loads((tmp_path / "e" / "results.json").read_text())
        assert set(res["success_rate"]) == {"gd", "gld_const", "gld_dynamic", "gld_diag",
                                            "gld_leading", "gld_hessian", "sgd"}
        assert (tmp_path / "e" / "escape.png").stat().st_size > 0
        assert main(["landscape", "pde", "--out", str(tmp_path / "p"), "--quick"]) == 0
        assert (tmp_path / "p" / "pde_smoothing.png").exists()
        assert main(["landscape", "escape", "--out", str(tmp_path / "x"),
                     "--threads", "0"]) == 2  # user error, no traceback
    finally:
        torch.set_num_threads(n)


def test_escape_equal_trace_protocol_cli(tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        assert main(["landscape", "escape", "--protocol", "equal-trace", "--out",
                     str(tmp_path / "a"), "--quick", "--threads", "1", "--repetitions", "8",
                     "--iterations", "20"]) == 0
        printed = capsys.readouterr().out
        assert "authors landscape" in printed and "equal-trace" in printed
        res = json.loads((tmp_path / "a" / "results.json").read_text())
        assert res["config"]["protocol"] == "equal-trace" and res["config"]["lr"] == 0.005
        assert res["config"]["success_rule"] == "corner" and res["landscape"]["name"] == "authors"
        assert main(["landscape", "escape", "--protocol", "equal-trace", "--landscape", "issue",
                     "--out", str(tmp_path / "i"), "--quick", "--threads", "1",
                     "--repetitions", "8", "--iterations", "20"]) == 0
        res = json.loads((tmp_path / "i" / "results.json").read_text())
        assert res["config"]["lr"] == 0.1 and res["landscape"]["name"] == "issue"
        assert main(["landscape", "escape", "--protocol", "equal-trace", "--sharp-eigs", "1",
                     "2", "--out", str(tmp_path / "x")]) == 2  # issue-landscape-only flag
    finally:
        torch.set_num_threads(n)

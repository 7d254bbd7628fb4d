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

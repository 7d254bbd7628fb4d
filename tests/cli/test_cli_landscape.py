"""``sgdlab landscape``: options refused before anything is printed or made."""
from __future__ import annotations

import pytest

from sgdlab.cli.main import main


@pytest.mark.parametrize("argv,needle", [
    (["--repetitions", "0"], "--repetitions must be an integer >= 1, got 0"),
    (["--landscape", "paper", "--sharp-eigs", "2", "1"],
     "--sharp-eigs/--flat-curvature apply to --landscape rescaled only"),
    (["--protocol", "authors-code", "--data-var", "0.1"],
     "--data-var applies to --landscape paper or rescaled"),
    (["--noise-trace", "0.1"], "--noise-trace applies to --protocol authors-code only"),
    (["--landscape", "rescaled", "--data-var", "-1"], "--data-var"),
])
def test_a_refused_escape_option_prints_no_progress_line(tmp_path, capsys, argv, needle):
    # "computing (output to DIR)" came first, then the error: a run that seemed to start
    out = tmp_path / "out"
    assert main(["landscape", "escape", "--quick", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgdlab: error: ") and needle in err, err
    assert "computing" not in err and not out.exists()

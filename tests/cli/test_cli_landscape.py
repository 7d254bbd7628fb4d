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


def test_escape_prints_eta_times_the_sharp_minimum_s_top_curvature(tmp_path, capsys):
    """Zhu et al.'s printed H_s has top eigenvalue λ = 110 + √9100: the line says η·λ and the
    η below which GD is stable there, 2 / λ (0.00974)."""
    import math

    lam = 110 + math.sqrt(9100)
    assert main(["landscape", "escape", "--quick", "--repetitions", "2", "--iterations", "3",
                 "--lr", "0.005", "--out", str(tmp_path / "e")]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert (f"eta=0.005 (eta*lambda_max = {0.005 * lam:.3g}; GD is stable at the sharp "
            f"minimum only for eta < {2 / lam:.3g})") in head, head


def test_escape_noise_trace_and_quick_repetitions_reach_the_experiment(tmp_path, capsys):
    """--noise-trace sets the authors' protocol's Tr Cov(ε) (default 0.01), and --quick runs
    50 repetitions unless --repetitions says otherwise."""
    import json

    out = tmp_path / "a"
    assert main(["landscape", "escape", "--protocol", "authors-code", "--noise-trace", "0.02",
                 "--quick", "--iterations", "2", "--out", str(out)]) == 0
    assert "(Tr Cov(eps) = 0.02, added after the step)" in capsys.readouterr().out
    config = json.loads((out / "results.json").read_text())["config"]
    assert (config["noise_trace"], config["repetitions"]) == (0.02, 50)


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_a_run_config_refuses_is_refused_before_the_folder_is_made(tmp_path, capsys,
                                                                          seed):
    # 2**64 was a traceback from torch's generator, in the --out folder made for it
    assert main(["landscape", "ou", "--quick", "--seed", seed, "--out",
                 str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ("sgdlab: error: --seed must be an int in 0..2**32 - 1 "
                                       f"(as a run config's seed), got {seed}\n")
    assert not (tmp_path / "o").exists()


def test_a_thread_count_below_one_is_refused(tmp_path, capsys):
    # --threads 0 reached torch.set_num_threads, whose error was a traceback
    assert main(["landscape", "ou", "--quick", "--threads", "0", "--out",
                 str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "sgdlab: error: --threads must be >= 1, got 0\n"
    assert not (tmp_path / "o").exists()


def test_the_catalogue_s_name_of_the_printed_loss_points_to_its_option(capsys):
    # `sgdlab list zhu-escape-2d` names the printed loss landscape=printed; the option's
    # choice is paper, and "printed" was an invalid choice close to none
    with pytest.raises(SystemExit) as stop:
        main(["landscape", "escape", "--quick", "--landscape", "printed"])
    assert stop.value.code == 2
    assert ("invalid choice: 'printed' (the printed loss is --landscape paper, the catalogue's "
            "--reading landscape=printed); choose from paper, rescaled, authors-code"
            in capsys.readouterr().err)

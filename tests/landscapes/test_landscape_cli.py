"""``sgdlab landscape`` demos run end to end and write their outputs."""
import json
import math

import pytest
import torch

from sgdlab.cli.main import main
from sgdlab.landscapes import pde


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
        # the last line names every file written: it named results.json only
        assert printed.splitlines()[-1] == (f"wrote {tmp_path / 'e' / 'results.json'}, "
                                            f"{tmp_path / 'e' / 'escape.png'}")
        assert main(["landscape", "pde", "--out", str(tmp_path / "p"), "--quick"]) == 0
        assert (tmp_path / "p" / "pde_smoothing.png").exists()
        printed = capsys.readouterr().out.rstrip()
        assert printed.endswith(f", {tmp_path / 'p' / 'pde_smoothing.png'}, "
                                f"{tmp_path / 'p' / 'pde_densities.png'}")
        assert main(["landscape", "escape", "--out", str(tmp_path / "x"),
                     "--threads", "0"]) == 2  # user error, no traceback
    finally:
        torch.set_num_threads(n)



def test_escape_options_given_to_another_demo_are_refused(tmp_path, capsys):
    # `landscape ou --lr 1e6` ran the OU demo at its own settings, --lr silently ignored
    assert main(["landscape", "ou", "--out", str(tmp_path / "o"), "--quick", "--lr", "1e6",
                 "--protocol", "authors-code"]) == 2
    err = capsys.readouterr().err
    assert "--lr, --protocol: escape options, but the demo is 'ou'" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()

def test_the_pde_demo_takes_the_thesis_beta_unless_told_and_only_it_takes_beta(tmp_path,
                                                                                capsys):
    heat = {}
    for beta, args in ((1.0, []), (5.0, ["--beta", "5"])):
        out = tmp_path / f"b{beta:g}"
        assert main(["landscape", "pde", "--out", str(out), "--quick", *args]) == 0
        res = json.loads((out / "results.json").read_text())
        assert res["beta"] == beta
        heat[beta] = res["curves"]["heat equation"]["max_u_xx"]
        # the curvatures of the solutions, not of a quadrature cut off at the grid's ends:
        # the same solutions on a grid three times as wide (--quick: 401 points on [−4, 4])
        wide = torch.linspace(-12, 12, 1201, dtype=torch.float64)
        fw = pde.wide_and_narrow_minima(wide)
        for name, smooth in (("viscous HJ (Cole–Hopf, local entropy)", pde.viscous_hj),
                             ("heat equation", pde.heat_smoothing)):
            u = smooth(fw, wide, 0.5, beta=beta)[400:801]
            top = float(pde.second_difference(u, 0.02)[40:-40].max())
            assert res["curves"][name]["max_u_xx"] == pytest.approx(top, rel=1e-6)
        printed = capsys.readouterr().out
        # Lemma 4.17's verdict, with the catalogue entry's grid allowance, for the HJ rows only
        hj = [line for line in printed.splitlines() if " HJ " in line and "u_xx" in line]
        assert len(hj) == 2 and all("the bound 1/(1/C+t)" in line and "1% grid allowance"
                                    in line for line in hj), printed
        assert "allowance" not in next(line for line in printed.splitlines()
                                       if line.startswith("heat"))
    # heat smoothing at β spreads with variance t/β: less smoothing, more curvature at β = 5
    assert heat[5.0] > heat[1.0]
    capsys.readouterr()
    assert main(["landscape", "ou", "--out", str(tmp_path / "o"), "--quick", "--beta", "2"]) == 2
    assert "--beta: a pde option, but the demo is 'ou'" in capsys.readouterr().err
    assert main(["landscape", "pde", "--out", str(tmp_path / "z"), "--beta", "0"]) == 2
    assert "--beta must be a finite number > 0, got 0.0" in capsys.readouterr().err
    # β = inf (and nan) reached the Cole–Hopf quadrature: a bare "math domain error"
    for bad in ("inf", "nan"):
        assert main(["landscape", "pde", "--out", str(tmp_path / "z"), "--beta", bad]) == 2
        assert f"--beta must be a finite number > 0, got {bad}" in capsys.readouterr().err
    assert main(["landscape", "escape", "--out", str(tmp_path / "z"), "--data-var", "nan"]) == 2
    assert "--data-var must be a finite number >= 0, got nan" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_escape_defaults_are_the_printed_landscape_and_lr_sets_eta(tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        assert main(["landscape", "escape", "--out", str(tmp_path / "p"), "--quick",
                     "--threads", "1", "--repetitions", "8", "--iterations", "20",
                     "--lr", "0.005"]) == 0
        printed = capsys.readouterr().out
        assert "paper landscape" in printed and "eta=0.005" in printed
        res = json.loads((tmp_path / "p" / "results.json").read_text())
        assert res["config"]["lr"] == 0.005 and res["config"]["protocol"] == "paper"
        assert res["landscape"]["name"] == "paper"
        # 110 + √9100: the printed H_s's top eigenvalue (the demo's landscape is float32)
        assert res["landscape"]["sharp_eigenvalues"][0] == pytest.approx(110 + math.sqrt(9100),
                                                                          rel=1e-6)
        assert set(res["reached_rate"]) == set(res["success_rate"])
    finally:
        torch.set_num_threads(n)


def test_escape_authors_code_protocol_cli(tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        assert main(["landscape", "escape", "--protocol", "authors-code", "--out",
                     str(tmp_path / "a"), "--quick", "--threads", "1", "--repetitions", "8",
                     "--iterations", "20"]) == 0
        printed = capsys.readouterr().out
        assert "authors-code landscape" in printed and "protocol authors-code" in printed
        res = json.loads((tmp_path / "a" / "results.json").read_text())
        assert res["config"]["protocol"] == "authors-code" and res["config"]["lr"] == 0.005
        assert res["config"]["success_rule"] == "corner"
        assert res["landscape"]["name"] == "authors-code"
        assert main(["landscape", "escape", "--protocol", "authors-code", "--landscape",
                     "rescaled", "--out", str(tmp_path / "i"), "--quick", "--threads", "1",
                     "--repetitions", "8", "--iterations", "20"]) == 0
        res = json.loads((tmp_path / "i" / "results.json").read_text())
        assert res["config"]["lr"] == 0.1 and res["landscape"]["name"] == "rescaled"
        # "equal-trace" names the same protocol (the GLD noise at equal trace)
        assert main(["landscape", "escape", "--protocol", "equal-trace", "--out",
                     str(tmp_path / "e"), "--quick", "--threads", "1", "--repetitions", "4",
                     "--iterations", "5"]) == 0
        res = json.loads((tmp_path / "e" / "results.json").read_text())
        assert res["config"]["protocol"] == "authors-code"
        # rescaled-only flags are refused elsewhere, with a one-line error
        assert main(["landscape", "escape", "--protocol", "authors-code", "--sharp-eigs", "1",
                     "2", "--out", str(tmp_path / "x")]) == 2
        assert main(["landscape", "escape", "--landscape", "paper", "--sharp-eigs", "1", "2",
                     "--out", str(tmp_path / "y")]) == 2
        # without --landscape the rescaled-only flags select the rescaled variant
        assert main(["landscape", "escape", "--sharp-eigs", "19", "1", "--out",
                     str(tmp_path / "r"), "--quick", "--threads", "1", "--repetitions", "4",
                     "--iterations", "10"]) == 0
        res = json.loads((tmp_path / "r" / "results.json").read_text())
        assert res["landscape"]["name"] == "rescaled"
        assert res["landscape"]["sharp_eigenvalues"] == pytest.approx([19.0, 1.0])
    finally:
        torch.set_num_threads(n)


def test_a_refused_option_leaves_no_empty_folder(tmp_path, capsys):
    """A demo that refuses its options has written nothing: the folder it made goes again,
    a folder that was there stays."""
    for out in (tmp_path / "new", tmp_path):
        assert main(["landscape", "escape", "--repetitions", "0", "--out", str(out)]) == 2
        assert "error: --repetitions must be an integer >= 1, got 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_noise_trace_is_refused_outside_the_authors_protocol(tmp_path, capsys):
    # the paper's protocol never reads it: the run was the default one, whatever the value
    assert main(["landscape", "escape", "--noise-trace", "0.5", "--quick",
                 "--out", str(tmp_path / "p")]) == 2
    assert ("--noise-trace applies to --protocol authors-code only"
            in capsys.readouterr().err)
    assert not (tmp_path / "p").exists()


def test_the_pde_demo_evolves_fig_4_1s_densities(tmp_path, capsys):
    """The demo's Fokker–Planck masses are those of the density under u = f (SGD), evolved
    here from the same start, and the temperature sets the diffusion D = β⁻¹/2."""
    from sgdlab.landscapes.fokker_planck import (downhill_drift, fokker_planck,
                                                 gaussian_density, mass_within)

    for beta, args in ((1.0, []), (5.0, ["--beta", "5"])):
        out = tmp_path / f"b{beta:g}"
        assert main(["landscape", "pde", "--out", str(out), "--quick", *args]) == 0
        assert (out / "pde_densities.png").stat().st_size > 0
        fp = json.loads((out / "results.json").read_text())["fokker_planck"]
        assert fp["diffusion"] == pytest.approx(1 / (2 * beta))
        x = torch.linspace(-4, 4, 401, dtype=torch.float64)
        rho0 = gaussian_density(x, fp["rho0_mean"], fp["rho0_std"] ** 2)
        rho0 = rho0 / (float(rho0.sum()) * 0.02)
        rho = fokker_planck(rho0, x, downhill_drift(pde.wide_and_narrow_minima(x), x),
                            fp["diffusion"], fp["horizon"])
        sgd = fp["densities"]["SGD (u = f)"]
        for key in ("start_basin", "global_basin"):
            assert sgd[key] == pytest.approx(mass_within(rho, x, *fp[key]), rel=1e-9)
        assert fp["start_basin"] != fp["global_basin"]   # a fair test: it starts elsewhere
        for masses in fp["densities"].values():
            assert 0 <= masses["start_basin"] + masses["global_basin"] <= 1 + 1e-9
        assert "Fokker–Planck from N(" in capsys.readouterr().out


def test_without_out_a_demo_writes_under_sgdlab_out(tmp_path, capsys, monkeypatch):
    # --out was required, unlike `sgdlab run`'s sgdlab-out/NAME-SCALE
    monkeypatch.chdir(tmp_path)
    n = torch.get_num_threads()
    try:
        assert main(["landscape", "ou", "--quick", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(n)
    out = tmp_path / "sgdlab-out" / "landscape-ou-quick"
    assert json.loads((out / "results.json").read_text())["demo"] == "ou"
    printed = capsys.readouterr()
    assert "wrote sgdlab-out/landscape-ou-quick/results.json" in printed.out
    # said before the numbers, which take up to half a minute in other demos
    assert printed.err.startswith("sgdlab landscape ou --quick: computing (output to "
                                  "sgdlab-out/landscape-ou-quick)")


@pytest.mark.parametrize("demo,device,message", [
    ("escape", "gpu", "--device must be cpu or cuda, got 'gpu'"),
    ("ou", "cuda", "--device cuda requested but CUDA is not available on this machine"),
    ("pspin", "cuda:1", "--device cuda:1 requested but this machine has 1 CUDA device(s)"),
    ("pde", "cuda", "--device cuda: `sgdlab landscape pde` computes on the CPU"),
])
def test_a_device_not_here_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, demo,
                                                   device, message):
    # one CUDA device when the case asks for a second, none otherwise
    monkeypatch.setattr(torch.cuda, "is_available", lambda: device == "cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["landscape", demo, "--quick", "--device", device,
                 "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sgdlab: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_escape_on_device_cpu_is_the_default_run(tmp_path, capsys):
    n = torch.get_num_threads()
    res = {}
    try:
        for name, extra in (("default", []), ("cpu", ["--device", "cpu"])):
            assert main(["landscape", "escape", "--quick", "--threads", "1", "--repetitions",
                         "10", "--iterations", "60", "--out", str(tmp_path / name),
                         *extra]) == 0
            res[name] = json.loads((tmp_path / name / "results.json").read_text())
            for key in ("seconds", "environment"):
                res[name].pop(key)
    finally:
        torch.set_num_threads(n)
    assert res["default"] == res["cpu"]


class _Reached(Exception):
    """Raised by a spy once it has recorded the devices (meta tensors hold no values)."""


def _spy_landscape(monkeypatch, demo, seen):
    """Replace where ``demo``'s chains reach the library by a spy recording their device."""
    import sgdlab.landscapes.escape as escape
    import sgdlab.landscapes.perceptron as perceptron
    import sgdlab.landscapes.sde as sde
    from sgdlab.landscapes.pspin import PSpinGlass
    from sgdlab.landscapes.quadratic import Quadratic

    def stop(**devices):
        seen.update(devices)
        raise _Reached

    if demo == "escape":
        monkeypatch.setattr(escape, "escape_experiment",
                            lambda land, cfg: stop(landscape=land.device))
    elif demo == "ou":
        # its closed form solves on the CPU from the landscape's values: none on meta
        monkeypatch.setattr(Quadratic, "sgd_stationary_covariance",
                            lambda self, lr, s: torch.eye(self.dim, dtype=torch.float64,
                                                          device=self.device))
        monkeypatch.setattr(sde, "sgd_chains", lambda q, th0, **kw: stop(
            landscape=q.device, chains=th0.device, generator=kw["generator"].device))
    elif demo == "double-well":
        monkeypatch.setattr(sde, "simulate", lambda eq, x0, **kw: stop(
            chains=x0.device, generator=kw["generator"].device))
    elif demo == "pspin":
        monkeypatch.setattr(PSpinGlass, "descend", lambda self, starts, **kw: stop(
            landscape=self.device, chains=starts.device))
    else:
        monkeypatch.setattr(perceptron, "anneal", lambda inst, **kw: stop(
            landscape=inst.patterns.device, generator=kw["generator"].device))


@pytest.mark.parametrize("demo", ["escape", "ou", "double-well", "pspin", "perceptron"])
def test_device_puts_the_landscape_and_chains_there(tmp_path, monkeypatch, demo):
    import sgdlab.cli.landscape as cli

    monkeypatch.setattr(cli, "check_device", lambda device: None)   # meta: no such check
    seen = {}
    _spy_landscape(monkeypatch, demo, seen)
    with pytest.raises(_Reached):
        main(["landscape", demo, "--quick", "--device", "meta", "--out", str(tmp_path)])
    meta, cpu = torch.device("meta"), torch.device("cpu")
    # the landscape and the chains on the device, the random numbers from a CPU generator
    assert seen and all(v == (cpu if k == "generator" else meta) for k, v in seen.items())

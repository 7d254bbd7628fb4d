"""Measurements an experiment can ask for by name, as thin calls into ``sgdlab.measure``.

Two kinds:

- **scalar** measurements ``fn(model, loss_fn, data, **opts) -> dict[str, float]``: usable
  during training (``measure: [{kind: hessian_top, every: 50, samples: 256}]``, wrapped in a
  ``MeasurementCallback`` with ``Schedule.every``) and at the end of training (``final:``);
- **array** measurements ``fn(...) -> (summary: dict, data: dict)`` for spectra and the like,
  only at the end of training.

``samples: n`` evaluates on the first n training examples (a fixed subset, so values are
comparable across steps); default: the whole training set. With ``sample_seed: s`` the n
examples are a fixed random subset drawn with seed s instead — needed where the data are
stored sorted by class (``mnist_small``'s first 400 training images are all zeros). Nothing
is computed here: every quantity comes from ``sgdlab.measure``.

Each measurement declares the metrics it writes into a run's summary (``metrics=``, a function
of its options where they name them): :func:`final_metrics` tells before any run trains what a
claim on a ``final`` measurement may name.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

import torch
from torch import Tensor, nn

from sgdlab.errors import ConfigError, check_flag, checked_int, checked_int_argument

Scalar = Callable[..., dict[str, float]]
ArrayM = Callable[..., tuple[dict[str, Any], dict[str, Any]]]

SCALARS: dict[str, tuple[Scalar, set[str]]] = {}
ARRAYS: dict[str, tuple[ArrayM, set[str]]] = {}
# array measurements that read the training optimizer's state (given as ``optimizer=``)
NEEDS_OPTIMIZER: set[str] = set()
# option checks run when the experiment is validated, before any training
CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {}
# the summary metrics each measurement writes, from its options bound to its function's
# signature with the defaults filled in (:func:`final_metrics`)
METRICS: dict[str, Callable[..., Iterable[str]]] = {}
# a measurement's own argument checks, which its function runs first and the experiment's
# validation runs on the options bound to the function's signature (defaults filled in)
ARGUMENT_CHECKS: dict[str, Callable[..., None]] = {}
_COMMON = {"kind", "every", "samples", "sample_seed", "split"}
# counts the measurements pass on to sgdlab.measure, which takes ints alone (30.0 is refused
# there), and the examples they are taken on (int() truncated samples: 2.5): checked with the
# experiment, not once a run has trained (option: (least, None ok))
_COUNTS = {"num_iter": (1, True), "probes": (1, False), "num_samples": (1, False),
           "samples": (1, True), "sample_seed": (0, True)}
# the arguments a measurement's function is given by the run, not by the measurement's options
_GIVEN = {"model", "loss_fn", "data", "optimizer", "path"}


def _declared(metrics: Iterable[str] | Callable[..., Iterable[str]]
              ) -> Callable[..., Iterable[str]]:
    """``metrics`` as a function of the options: a fixed collection is one that ignores them."""
    if callable(metrics):
        return metrics
    fixed = tuple(metrics)
    return lambda **_: fixed


def scalar(name: str, options: set[str] = frozenset(), *,
           metrics: Iterable[str] | Callable[..., Iterable[str]],
           arguments: Callable[..., None] | None = None):
    """``metrics``: the keys of the function's dict, or ``metrics(**options) -> keys`` where
    its options name them; ``arguments(**options)``: the function's own checks of its options
    (a ValueError)."""
    def deco(fn):
        SCALARS[name] = (fn, set(options))
        METRICS[name] = _declared(metrics)
        if arguments is not None:
            ARGUMENT_CHECKS[name] = arguments
        return fn
    return deco


def array(name: str, options: set[str] = frozenset(), *,
          metrics: Iterable[str] | Callable[..., Iterable[str]],
          needs_optimizer: bool = False,
          check: Callable[[dict[str, Any]], None] | None = None,
          arguments: Callable[..., None] | None = None):
    """``metrics``: the keys of the function's summary dict, as for scalars; ``check(m)``
    raises a ValueError for option values that would fail after training;
    ``arguments(**options)`` are the function's own checks of its options, as for scalars."""
    def deco(fn):
        ARRAYS[name] = (fn, set(options))
        METRICS[name] = _declared(metrics)
        if needs_optimizer:
            NEEDS_OPTIMIZER.add(name)
        if check is not None:
            CHECKS[name] = check
        if arguments is not None:
            ARGUMENT_CHECKS[name] = arguments
        return fn
    return deco


def check_counts(m: dict[str, Any]) -> None:
    """A ConfigError (a ValueError) for a count of ``m`` (:data:`_COUNTS`) that is not an int
    in range."""
    for k, (low, none_ok) in _COUNTS.items():
        if k in m:
            checked_int(f"measurement {m.get('kind')!r}: {k}", m[k], low,
                        " (or null: the default)" if none_ok else "", optional=none_ok,
                        error=ConfigError)


def check_arguments(m: dict[str, Any]) -> None:
    """The options of measurement ``m`` bound to its function's signature, defaults filled in,
    and given to the function's own argument checks (:data:`ARGUMENT_CHECKS`): what the
    function refuses first when a run has trained, refused before any run starts."""
    kind = m["kind"]
    if kind not in ARGUMENT_CHECKS:
        return
    try:
        ARGUMENT_CHECKS[kind](**_bound_options(m))
    except ValueError as e:
        raise ValueError(f"measurement {kind!r}: {e}") from None


def final_metrics(m: dict[str, Any]) -> set[str]:
    """The metrics measurement ``m`` (validated: :func:`validate_measure`) writes into a run's
    summary, as its registration declares them, from its options where they name them."""
    return set(METRICS[m["kind"]](**_bound_options(m)))


def _bound_options(m: dict[str, Any]) -> dict[str, Any]:
    """The options of measurement ``m`` bound to its function's signature, defaults filled in,
    without the arguments the run gives (:data:`_GIVEN`)."""
    import inspect

    kind = m["kind"]
    fn = trajectory_spectrum if kind == "trajectory_spectrum" else \
        {**SCALARS, **ARRAYS}[kind][0]
    # the options are the function's keywords: validate_measure refused any other first
    bound = inspect.signature(fn).bind_partial(**_opts(m))
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in _GIVEN}


def validate_measure(m: Any, where: str, *, final: bool) -> None:
    if not isinstance(m, dict) or "kind" not in m:
        raise ConfigError(f"{where}: a measurement is a mapping with a 'kind' key, got {m!r}")
    kind = m["kind"]
    table = {**SCALARS, **ARRAYS} if final else SCALARS
    if kind not in table:
        extra = " (array measurements only in 'final')" if kind in ARRAYS else ""
        raise ConfigError(f"{where}: unknown measurement kind {kind!r}{extra}; known: "
                          f"{', '.join(sorted(table))}")
    # trajectory_spectrum reads the run's recorded trajectory, and is given its item's keys
    # (all but kind): the common ones, which choose the examples, would fail it once trained
    common = {"kind"} if kind == "trajectory_spectrum" else _COMMON
    allowed = common | table[kind][1]
    for k in m:
        if k not in allowed:
            why = (f" ({k} does not apply to trajectory_spectrum, which reads the run's "
                   "recorded trajectory, not examples)" if k in _COMMON else "")
            raise ConfigError(f"{where}: measurement {kind!r} has no option {k!r}{why}; "
                              f"allowed: {', '.join(sorted(allowed))}")
    from sgdlab.measure.passes import memory_budget_bytes

    try:
        memory_budget_bytes(m.get("memory_budget"))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    try:
        check_counts(m)
        check_arguments(m)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if not final and "every" not in m:
        raise ConfigError(f"{where}: measurement {kind!r} during training needs 'every' (steps)")
    if kind in CHECKS:
        try:
            CHECKS[kind](m)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


def _opts(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in _COMMON}


def measurement_data(ds, m: dict[str, Any], device=None) -> tuple[Tensor, Tensor]:
    check_counts(m)     # samples: 2.5 was int()'s 2
    x, y = (ds.x_test, ds.y_test) if m.get("split") == "test" else (ds.x_train, ds.y_train)
    n = m.get("samples")
    if n is not None and m.get("sample_seed") is not None:
        g = torch.Generator().manual_seed(int(m["sample_seed"]))
        idx = torch.randperm(len(x), generator=g)[: int(n)]
        x, y = x[idx], y[idx]
    elif n is not None:
        x, y = x[: int(n)], y[: int(n)]
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def compute_scalar(m: dict[str, Any], model: nn.Module, loss_fn, data) -> dict[str, float]:
    fn, _ = SCALARS[m["kind"]]
    return fn(model, loss_fn, data, **_opts(m))


def compute_final(m: dict[str, Any], model: nn.Module, loss_fn, data, *,
                  optimizer: torch.optim.Optimizer | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``optimizer``: the one that trained ``model``, for the measurements that read its
    state (``fisher_diagonal`` with ``reading: adam-moments``); the others ignore it."""
    if m["kind"] in SCALARS:
        return compute_scalar(m, model, loss_fn, data), {}
    fn, _ = ARRAYS[m["kind"]]
    if m["kind"] in NEEDS_OPTIMIZER:
        return fn(model, loss_fn, data, optimizer=optimizer, **_opts(m))
    return fn(model, loss_fn, data, **_opts(m))


def _gen(seed: int | None) -> torch.Generator:
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


# --- scalars -----------------------------------------------------------------------------
# for the load's checks: at run time the functions' evaluation_mode checks bn_mode first,
# before any model work (hessian_top's own checks, which need no model, run it as well)
def _check_bn_mode(*, bn_mode, **_) -> None:
    from sgdlab.measure.walk import check_bn_mode

    check_bn_mode(bn_mode)


def _check_hessian_top(*, which, tol, bn_mode, **_) -> None:
    from sgdlab.measure.curvature.lanczos import check_tol
    from sgdlab.measure.dynamics import check_hessian_which

    check_hessian_which(which, "hessian_top which")
    check_tol(tol)
    _check_bn_mode(bn_mode=bn_mode)


@scalar("hessian_top", {"tol", "num_iter", "bn_mode", "which"}, metrics={"hessian_top"},
        arguments=_check_hessian_top)
def _hessian_top(model, loss_fn, data, tol: float = 1e-3, num_iter: int = 40,
                 bn_mode: str = "eval", which: str = "magnitude"):
    """``which="magnitude"``: the spectral norm max |λ| (Xing et al.'s "max eigenvalue
    (spectral norm)"); ``"largest"``: the algebraically largest eigenvalue λ_max
    (Jastrzebski et al.'s "largest eigenvalue"), which differs from the norm when a negative
    eigenvalue is the larger in magnitude."""
    from sgdlab.measure.dynamics import HESSIAN_WHICH

    _check_hessian_top(which=which, tol=tol, bn_mode=bn_mode)
    fn = HESSIAN_WHICH[which]
    return {"hessian_top": fn(model, loss_fn, data, bn_mode=bn_mode, tol=tol,
                              num_iter=num_iter, generator=_gen(0))}


@scalar("hessian_frobenius", {"probes", "bn_mode"}, metrics={"hessian_frobenius"},
        arguments=_check_bn_mode)
def _hessian_frob(model, loss_fn, data, probes: int = 20, bn_mode: str = "eval"):
    from sgdlab.measure.curvature import hessian_frobenius_norm
    from sgdlab.measure.walk import evaluation_mode

    with evaluation_mode(model, bn_mode):
        est = hessian_frobenius_norm(model, loss_fn, data, probes, generator=_gen(1))
    return {"hessian_frobenius": est.value}


@scalar("hessian_trace", {"probes", "bn_mode"}, metrics={"hessian_trace"},
        arguments=_check_bn_mode)
def _hessian_trace(model, loss_fn, data, probes: int = 20, bn_mode: str = "eval"):
    from sgdlab.measure.curvature import hessian_trace
    from sgdlab.measure.walk import evaluation_mode

    with evaluation_mode(model, bn_mode):
        est = hessian_trace(model, loss_fn, data, probes, generator=_gen(2))
    return {"hessian_trace": est.value}


@scalar("grad_norm", {"bn_mode"}, metrics={"grad_norm"}, arguments=_check_bn_mode)
def _grad_norm(model, loss_fn, data, bn_mode: str = "eval"):
    from sgdlab.measure.dynamics import full_batch_grad_norm

    return {"grad_norm": full_batch_grad_norm(model, loss_fn, data, bn_mode=bn_mode)}


@scalar("noise_trace", metrics={"noise_trace"})
def _noise_trace(model, loss_fn, data):
    from sgdlab.measure.noise import gradient_covariance

    return {"noise_trace": gradient_covariance(model, loss_fn, data).trace()}


@scalar("expected_sharpness", {"sigma", "num_samples", "memory_budget"},
        metrics={"expected_sharpness", "expected_sharpness_se"})
def _expected_sharpness(model, loss_fn, data, sigma: float = 0.01, num_samples: int = 20,
                        memory_budget: int | str | None = None):
    """``memory_budget``: bytes of activations one forward pass may take (absent or null: the
    device's default), :func:`sgdlab.measure.sharpness.perturbed_evaluations`, as
    :func:`sgdlab.measure.passes.memory_budget_bytes` reads it (``2e9``, ``"2GiB"``)."""
    from sgdlab.measure.passes import memory_budget_bytes
    from sgdlab.measure.sharpness import expected_sharpness

    est = expected_sharpness(model, loss_fn, data, sigma, num_samples, generator=_gen(3),
                             memory_budget=memory_budget_bytes(memory_budget))
    return {"expected_sharpness": est.value, "expected_sharpness_se": est.stderr}


# --- arrays ------------------------------------------------------------------------------
def _check_hessian_spectrum(*, chunk_size, max_params) -> None:
    from sgdlab.measure.curvature.dense import check_max_params

    # in the words of LinearOperator.to_dense, which dense_hessian passes it to
    checked_int_argument("chunk_size", chunk_size, 1, ": columns per pass")
    check_max_params(max_params)


@array("hessian_spectrum", {"max_params", "chunk_size"},
       metrics={"hessian_lambda_max", "hessian_lambda_min", "hessian_negative_fraction",
                "hessian_near_zero_fraction", "hessian_harmonic_mean", "hessian_dim"},
       arguments=_check_hessian_spectrum)
def _hessian_spectrum(model, loss_fn, data, max_params: int = 60_000, chunk_size: int = 256):
    """``chunk_size``: Hessian columns per product (:func:`sgdlab.measure.curvature.
    dense_hessian`); 1 for a recurrent network, whose batched double backward costs ~3 times
    a column's (docs/design/curvature.md, "Dense Hessians of recurrent networks")."""
    from sgdlab.measure.curvature import harmonic_mean_eigenvalue, hessian_spectrum

    _check_hessian_spectrum(chunk_size=chunk_size, max_params=max_params)
    raw = hessian_spectrum(model, loss_fn, data, max_params=max_params, chunk_size=chunk_size)
    # the positive part above the round-off of the model's dtype: cast to float64 first, the
    # threshold took float64's eps and kept float32 round-off, which the mean then reads
    hm, used = harmonic_mean_eigenvalue(raw)
    ev = raw.double()
    lam_max = float(ev.abs().max())
    small = float((ev.abs() <= 1e-3 * lam_max).double().mean())
    return ({"hessian_lambda_max": float(ev[-1]), "hessian_lambda_min": float(ev[0]),
             "hessian_negative_fraction": float((ev < 0).double().mean()),
             "hessian_near_zero_fraction": small, "hessian_harmonic_mean": hm,
             "hessian_dim": int(ev.numel())},
            {"hessian_eigenvalues": ev.tolist()})


def _check_fisher(m: dict[str, Any]) -> None:
    from sgdlab.measure.fisher import FISHER_READINGS

    if m.get("reading", "per-sample") not in FISHER_READINGS:
        raise ValueError(f"fisher_diagonal: reading must be one of "
                         f"{', '.join(FISHER_READINGS)}, got {m.get('reading')!r}")
    check_flag("fisher_diagonal: bias_correction", m.get("bias_correction", True),
               error=ConfigError)
    if "bias_correction" in m and m.get("reading", "per-sample") != "adam-moments":
        raise ValueError("fisher_diagonal: bias_correction belongs to reading 'adam-moments'")


@array("fisher_diagonal", {"reading", "bias_correction"},
       metrics={"fisher_dim", "fisher_max", "fisher_min", "fisher_negative_fraction"},
       needs_optimizer=True, check=_check_fisher)
def _fisher_diagonal(model, loss_fn, data, optimizer=None, reading: str = "per-sample",
                     bias_correction: bool = True):
    """The diagonal of the empirical Fisher, E(g²) − (E g)² (thesis §3.3.1 (iv)):
    ``reading: per-sample`` over the measurement's examples at the final weights,
    ``adam-moments`` from the training Adam's state (:func:`sgdlab.measure.fisher.
    fisher_diagonal`; ``bias_correction`` for the latter)."""
    from sgdlab.measure.fisher import fisher_diagonal

    diag = fisher_diagonal(model, loss_fn, data, reading=reading, optimizer=optimizer,
                           bias_correction=bias_correction)
    if not bool(torch.isfinite(diag).all()):
        raise FloatingPointError("the Fisher diagonal holds non-finite entries")
    return ({"fisher_dim": int(diag.numel()), "fisher_max": float(diag.max()),
             "fisher_min": float(diag.min()),
             "fisher_negative_fraction": float((diag < 0).double().mean())},
            {"fisher_diagonal": diag.tolist()})


def _check_diffusion_spectrum(*, batch_size, replacement) -> None:
    from sgdlab.measure.noise import check_batch_size

    if batch_size is not None:
        try:
            check_batch_size(batch_size)
        except ValueError as e:
            raise ValueError(f"batch_size: {e} (or null: Σ itself)") from None
    check_flag("replacement", replacement, error=ConfigError)


@array("diffusion_spectrum", {"batch_size", "replacement"},
       metrics={"diffusion_rank", "diffusion_rank_fraction", "diffusion_trace",
                "diffusion_dim", "diffusion_samples", "diffusion_lambda_max"},
       arguments=_check_diffusion_spectrum)
def _diffusion_spectrum(model, loss_fn, data, batch_size: int | None = None,
                        replacement: bool = True):
    from sgdlab.measure.noise import diffusion_matrix

    _check_diffusion_spectrum(batch_size=batch_size, replacement=replacement)
    D = diffusion_matrix(model, loss_fn, data, batch_size, replacement=replacement)
    spec = D.spectrum().double()
    return ({"diffusion_rank": int(D.rank()), "diffusion_rank_fraction": float(D.rank_fraction()),
             "diffusion_trace": float(D.trace()), "diffusion_dim": int(D.dim),
             "diffusion_samples": int(D.num_samples),
             "diffusion_lambda_max": float(spec.max()) if spec.numel() else 0.0},
            {"diffusion_eigenvalues": spec.tolist()})


def _check_trajectory_spectrum(*, max_lag, level, burnin, low_fraction) -> None:
    """The checks of :func:`trajectory_spectrum`'s options that need no trajectory, as the
    functions of ``sgdlab.measure.trajectory`` it calls make them."""
    from sgdlab.measure.trajectory import check_burnin, check_level, check_max_lag

    check_max_lag(max_lag)
    check_level(level)
    check_burnin(burnin)
    check_level(low_fraction, "low_fraction")


@array("trajectory_spectrum", {"max_lag", "level", "burnin", "low_fraction"},
       metrics={"acf_fraction_outside", "periodicity_p_value", "periodic",
                "dominant_frequency", "snapshots", "burnin", "low_frequency_ratio",
                "low_frequency_p_value", "low_frequency_excess",
                "iterate_acf_fraction_outside", "brownian_iterate_acf_fraction_outside"},
       arguments=_check_trajectory_spectrum)
def _trajectory_spectrum_placeholder(*a, **k):  # pragma: no cover - dispatched by the procedure
    raise RuntimeError("trajectory_spectrum needs the run's recorded trajectory")


def trajectory_spectrum(path, *, max_lag: int | None = None, level: float = 0.01,
                        burnin: int = 0, low_fraction: float = 0.1
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Increment spectrum, autocorrelations, periodicity and low-frequency tests of a recorded
    trajectory (``sgdlab.store.trajectory`` directory written by the ``trajectory``
    instrument), after discarding the first ``burnin`` snapshots (thesis §6.3.3). The iterate
    autocorrelation (thesis Fig. 6.3b) is taken at lags n/10 … n/2 ("very large lags"), with the
    same statistic for a simulated Brownian path of the same size as the reference."""
    from sgdlab.measure.trajectory import (brownian_reference, discard_burnin,
                                           increment_autocorrelation, increment_spectrum,
                                           iterate_autocorrelation, low_frequency_test,
                                           periodicity_test)
    from sgdlab.store.trajectory import open_trajectory

    _check_trajectory_spectrum(max_lag=max_lag, level=level, burnin=burnin,
                               low_fraction=low_fraction)
    traj = open_trajectory(path)
    # the spectra take the snapshots as a series at equal time steps: a recorder with both
    # cadences (every k steps and every epoch) interleaves the two, and a straight drift then
    # reads as a periodicity of the epoch length
    if not any(len(t) < 3 or bool(np.all(np.diff(t) == t[1] - t[0]))
               for t in (traj.steps, traj.epochs)):
        raise ConfigError(f"{path}: the snapshots are not evenly spaced in steps or in epochs "
                          f"(steps {', '.join(map(str, traj.steps[:6]))}, ...): the spectra "
                          "need one cadence; record the trajectory every_steps: k with "
                          "every_epochs: null, or every_epochs: k alone")
    snaps = discard_burnin(np.asarray(traj.snapshots, dtype=np.float64), int(burnin))
    sp = increment_spectrum(snaps)
    ac = increment_autocorrelation(snaps, max_lag)
    pt = periodicity_test(snaps, level=level)
    lf = low_frequency_test(snaps, fraction=low_fraction, level=level)
    n = len(snaps)
    big = dict(max_lag=max(1, n // 2), min_lag=max(1, n // 10))
    it = iterate_autocorrelation(snaps, **big)
    bm = iterate_autocorrelation(brownian_reference(n, sp.num_coords, seed=0), **big)
    stride = max(1, len(it.lags) // 200)
    return ({"acf_fraction_outside": ac.fraction_outside,
             "periodicity_p_value": pt.combined_p_value, "periodic": bool(pt.periodic),
             "dominant_frequency": pt.dominant_frequency, "snapshots": int(len(snaps)),
             "burnin": int(burnin), "low_frequency_ratio": lf.mean_ratio,
             "low_frequency_p_value": lf.combined_p_value,
             "low_frequency_excess": bool(lf.low_frequency_excess),
             "iterate_acf_fraction_outside": it.fraction_outside,
             "brownian_iterate_acf_fraction_outside": bm.fraction_outside},
            {"spectrum_freqs": sp.freqs, "spectrum_mean": sp.mean, "spectrum_std": sp.std,
             "num_coords": sp.num_coords, "n_increments": sp.n, "acf_lags": ac.lags,
             "acf_mean": ac.mean, "acf_std": ac.std, "acf_band": ac.band,
             "iterate_acf_lags": it.lags[::stride], "iterate_acf_mean": it.mean[::stride],
             "iterate_acf_std": it.std[::stride], "iterate_acf_band": it.band,
             "brownian_acf_mean": bm.mean[::stride]})

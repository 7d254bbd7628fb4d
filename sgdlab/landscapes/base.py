"""The ``Landscape`` base: an analytic, differentiable loss over a parameter tensor.

Conventions (shared by every landscape in this package):

- ``theta`` has shape ``(..., dim)``; every leading dimension is an independent chain, so a
  landscape evaluates 1 or 10 000 chains with the same call (no Python loops over chains).
- Where the paper defines data ("samples"), the landscape has ``num_samples = N`` and
  ``per_sample_loss(theta) -> (..., N)``; the loss is their *mean*, L(θ) = (1/N) Σ_i ℓ_i(θ),
  like every mean-reduced ``loss_fn`` in sgdlab. ``loss(theta, idx)`` averages over the
  samples in ``idx`` only, which is how a mini-batch (genuine SGD noise) is taken.
- Gradients/Hessians default to autograd (``torch.func``); subclasses override them with
  closed forms where speed matters, and the tests check the overrides against autograd.
- Device and dtype: a landscape's tensors (Hessians, centres, samples, couplings and every
  derived constant) live on one device in one floating dtype; :meth:`Landscape.to` moves them
  all in place, as ``nn.Module.to`` does, and chains must be on :attr:`Landscape.device`
  (a ``UserError`` names both devices otherwise).
"""
from __future__ import annotations

import numbers
import operator
from abc import ABC
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from sgdlab.errors import (UserError, check_flag, checked_float, forward_mode_loaded,
                           refused_value)


class Landscape(ABC):
    """A loss f: R^dim -> R, batched over leading dimensions of ``theta``.

    Subclasses set ``dim`` (and ``num_samples`` when the loss is a mean over samples) and
    implement either ``per_sample_loss`` (sample-structured) or ``loss`` (no samples). They
    keep their tensors as instance attributes, directly or in lists, tuples and dicts (or in
    a nested ``Landscape`` / ``nn.Module``), so that :meth:`to` finds and moves every one.
    """

    dim: int
    num_samples: int | None = None
    #: whether chains wider than the landscape's dtype are evaluated in the wider one (the
    #: p-spin glass promotes); elsewhere the constants' matmuls refuse them (``check_dtype``)
    evaluates_wider_chains: bool = False

    # ------------------------------------------------------------ device / dtype
    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Landscape:
        """Move every tensor the landscape holds to ``device`` and its floating tensors to
        ``dtype``, **in place** (as ``nn.Module.to``), and return the landscape itself.

        Integer and boolean tensors (indices, masks) keep their dtype. Derived constants move
        with the rest, so closed forms stay consistent. Copy first (``copy.deepcopy``) to keep
        the original. Chains passed to the landscape afterwards must be on its new device.
        """
        check_floating_dtype(f"{type(self).__name__}.to", dtype)
        device = None if device is None else torch.device(device)

        def convert(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return self._apply(convert)

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> Landscape:
        """Replace every tensor attribute ``t`` (also inside lists, tuples, dicts, nested
        landscapes and modules) by ``fn(t)``; the walk ``to`` and ``LandscapeModel`` use."""
        for name, value in list(vars(self).items()):
            new = _map_tensors(value, fn)
            if new is not value:
                setattr(self, name, new)
        # a nested landscape or module is moved in place, with no assignment to forget it
        self._forget_memos()
        return self

    def _forget_memos(self) -> None:
        self.__dict__.pop("_device_memo", None)
        self.__dict__.pop("_dtype_memo", None)

    def _tensors(self) -> Iterator[Tensor]:
        """Every tensor the landscape holds, in the order of :meth:`_apply`'s walk."""
        yield from _iter_tensors(vars(self).values())

    @property
    def device(self) -> torch.device | None:
        """The device of the landscape's tensors; None for one that holds none (DoubleWell,
        AnalyticLoss): those evaluate on whatever device the chains are on."""
        # memoised: every evaluation checks its chains against it (a walk over the attributes
        # each step made SGD chains on a 3-d quadratic 30% slower); an assignment or a move
        # (_apply) forgets it
        memo = self.__dict__.get("_device_memo")
        if memo is not None:
            return memo
        for t in self._tensors():
            self.__dict__["_device_memo"] = t.device
            return t.device
        return None

    def __setattr__(self, name: str, value) -> None:
        self._forget_memos()
        object.__setattr__(self, name, value)

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the landscape's floating tensors; None for one that holds none."""
        # memoised as the device is: every evaluation checks its chains against it
        if "_dtype_memo" in self.__dict__:
            return self.__dict__["_dtype_memo"]
        found = next((t.dtype for t in self._tensors() if t.is_floating_point()), None)
        self.__dict__["_dtype_memo"] = found
        return found

    def check_device(self, name: str, x: Tensor) -> None:
        """A ``UserError`` naming both devices unless tensor ``x`` (chains, an initial point)
        is on the landscape's device (any device for a landscape that holds no tensors)."""
        dev = self.device
        if dev is not None and isinstance(x, Tensor) and x.device != dev:
            raise UserError(f"{type(self).__name__}: {name} is on {x.device} but the landscape "
                            f"is on {dev}; move one of them (landscape.to({str(x.device)!r}) or "
                            f"{name}.to({str(dev)!r}))")

    # ----------------------------------------------------------------- values
    def per_sample_loss(self, theta: Tensor) -> Tensor:
        """ℓ_i(θ) for every sample, shape ``(..., N)``."""
        raise UserError(f"{type(self).__name__} has no per-sample structure")

    def loss(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        """Mean loss over all samples (``idx=None``) or over ``idx``, shape ``(...)``.

        ``idx`` is an integer tensor of sample indices, shape ``(m,)`` (same batch for every
        chain) or ``(..., m)`` (one batch per chain); repeated indices count repeatedly, so a
        with-replacement batch is an unbiased estimate of L.
        """
        self._check(theta)
        per = self.per_sample_loss(theta)
        if idx is None:
            return per.mean(-1)
        return _take(per, idx).mean(-1)

    # ------------------------------------------------------------- derivatives
    def grad(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        """∇L(θ) (or of the mini-batch loss on ``idx``), shape ``(..., dim)``.

        Chains are independent, so the gradient of the summed loss is each chain's gradient.
        A ``theta`` that requires grad (with grad mode on) gives a differentiable result, as
        the closed forms of the subclasses do: a detached one made the pathwise derivative of
        a simulation through the drift −∇f silently wrong (∂x_n/∂x_0 = 1 on ½x²).
        """
        self._check(theta)
        differentiable = theta.requires_grad and torch.is_grad_enabled()
        with torch.enable_grad():
            t = theta if differentiable else theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss(t, idx).sum(), t,
                                       create_graph=differentiable)
        return g

    def per_sample_grad(self, theta: Tensor) -> Tensor:
        """∇ℓ_i(θ) for every sample, shape ``(..., N, dim)``."""
        self._check(theta)
        if self.num_samples is None:
            raise UserError(f"{type(self).__name__} has no per-sample structure")
        flat = theta.reshape(-1, self.dim)
        jac = torch.func.vmap(torch.func.jacrev(self.per_sample_loss))(flat)  # (B, N, dim)
        return jac.reshape(*theta.shape[:-1], self.num_samples, self.dim)

    def hessian(self, theta: Tensor) -> Tensor:
        """∇²L(θ), shape ``(..., dim, dim)``."""
        self._check(theta)
        flat = theta.reshape(-1, self.dim)
        forward_mode_loaded()       # torch.func.hessian is forward over reverse mode
        hess = torch.func.vmap(torch.func.hessian(lambda t: self.loss(t)))(flat)
        return hess.reshape(*theta.shape[:-1], self.dim, self.dim)

    def gradient_covariance(self, theta: Tensor) -> Tensor:
        """Σ(θ) = (1/N) Σ_i (∇ℓ_i − ∇L)(∇ℓ_i − ∇L)ᵀ, shape ``(..., dim, dim)``.

        The 1/N (population) normalisation makes Σ/m the exact covariance of a size-m
        with-replacement mini-batch gradient, the convention of Zhu et al. eq. (3).
        """
        g = self.per_sample_grad(theta)
        c = g - g.mean(-2, keepdim=True)
        return c.transpose(-1, -2) @ c / g.shape[-2]

    # ------------------------------------------------------------------ helpers
    def _check(self, theta: Tensor) -> None:
        if not isinstance(theta, Tensor):
            raise UserError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if theta.ndim == 0 or theta.shape[-1] != self.dim:
            raise UserError(
                f"{type(self).__name__}: theta must have shape (..., {self.dim}), "
                f"got {tuple(theta.shape)}"
            )
        self.check_device("theta", theta)
        self.check_dtype("theta", theta)

    def check_dtype(self, name: str, x: Tensor) -> None:
        """A ``UserError`` naming both dtypes when floating chains ``x`` are wider than the
        landscape's floating tensors (float64 chains on a float32 landscape failed in a matmul
        with "expected m1 and m2 to have the same dtype"). Narrower chains are promoted, and
        wider ones too where the class sets :attr:`evaluates_wider_chains`."""
        own = self.dtype
        if own is None or self.evaluates_wider_chains or not x.is_floating_point() or \
                torch.promote_types(x.dtype, own) == own:
            return
        raise UserError(f"{type(self).__name__}: {name} is {x.dtype} but the landscape is "
                        f"{own}; move one of them (landscape.to(dtype={x.dtype}) or "
                        f"{name}.to({own}))")

    def sample_batches(
        self, batch_shape: tuple[int, ...], batch_size: int, *, replacement: bool = True,
        generator: torch.Generator | None = None, device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw one mini-batch of indices per chain, shape ``(*batch_shape, batch_size)``, on
        ``device`` (default: the landscape's).

        The indices are drawn on the generator's device (``device`` without one) and moved,
        so a CPU generator gives the same batches whatever device the chains are on.
        """
        n = self.num_samples
        if n is None:
            raise UserError(f"{type(self).__name__} has no samples to draw batches from")
        batch_size = check_count("batch_size", batch_size, 1)   # 2.5 failed inside randint
        replacement = check_flag("replacement", replacement)
        check_generator(generator)
        if not replacement and batch_size > n:
            raise UserError(f"batch_size must be in [1, {n}] here, got {batch_size}")
        device = self.device if device is None else torch.device(device)
        gdev = generator.device if generator is not None else device
        if replacement:
            idx = torch.randint(n, (*batch_shape, batch_size), generator=generator,
                                device=gdev)
        else:
            # Without replacement: the first m entries of an independent random permutation.
            keys = torch.rand((*batch_shape, n), generator=generator, device=gdev)
            idx = keys.argsort(-1)[..., :batch_size]
        return idx if device is None else idx.to(device)


class AnalyticLoss(Landscape):
    """A landscape defined by a plain batched callable ``f(theta) -> (...)`` (no samples):
    one loss per chain, ``theta`` of shape (..., dim) giving shape (...).

    ``fn`` is the user's: :meth:`to` cannot see the tensors its closure holds, so it must
    work on the chains' device and dtype itself (build its constants with ``.to(theta)``)."""

    def __init__(self, fn, dim: int) -> None:
        if not callable(fn):
            raise UserError(f"fn must be a callable theta -> loss, got {type(fn).__name__}")
        self._fn = fn
        self.dim = check_count("dim", dim, 1)

    def loss(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        self._check(theta)
        if idx is not None:
            raise UserError("AnalyticLoss has no samples; idx must be None")
        out = self._fn(theta)
        # an f of shape (..., dim) (per-coordinate terms) made grad the gradient of their sum
        # and simulate ran on it without a word
        if not isinstance(out, Tensor):
            raise UserError(f"AnalyticLoss: fn must return a torch.Tensor, got "
                            f"{type(out).__name__}")
        if out.shape != theta.shape[:-1]:
            raise UserError(f"AnalyticLoss: fn must return one loss per chain, shape "
                            f"{tuple(theta.shape[:-1])} for theta of shape "
                            f"{tuple(theta.shape)}, got {tuple(out.shape)}")
        return out


def check_positive(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number > 0 (not a bool or a string), else a
    ``UserError`` "<name> must be a finite number > 0, got <value>" (:func:`checked_float`;
    a NaN or infinite step, time or temperature gives NaN states, not an error, downstream)."""
    return checked_float(name, value, 0.0, strict=True)


def check_generator(generator: object) -> None:
    """A ``UserError`` unless ``generator`` is None or a ``torch.Generator`` (a seed passed
    as the generator failed with "'int' object has no attribute 'device'")."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise UserError(f"generator must be a torch.Generator or None "
                        f"(torch.Generator().manual_seed(seed) for a seed), got "
                        f"{type(generator).__name__}")


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``, a whole number (a 1.5 or "1" failed inside
    ``manual_seed`` with "expected a long"); a ``UserError`` naming it otherwise."""
    value = _whole_number(seed)
    if value is None:
        raise UserError(f"seed must be an integer, {refused_value(seed)}")
    return torch.Generator().manual_seed(value)


def check_floating_dtype(call: str, dtype: object) -> None:
    """A ``UserError`` naming ``call`` unless ``dtype`` is None or a floating torch.dtype (the
    ``dtype`` of a ``to`` that moves floating tensors only)."""
    if dtype is not None and not (isinstance(dtype, torch.dtype)
                                  and dtype.is_floating_point):
        raise UserError(f"{call}: dtype must be a floating torch.dtype, got {dtype!r}")


def check_count(name: str, value: int, minimum: int = 0) -> int:
    """``value`` as an int if it is a whole number >= ``minimum`` (an int, a 0-d integer
    tensor, or a float such as 4.0), else a ``UserError`` naming it."""
    v = _whole_number(value)
    if v is None or v < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, {refused_value(value)}")
    return v


def _whole_number(value: object) -> int | None:
    """``value`` as an int if it is a whole number (an int, a 0-d integer tensor, a float
    such as 4.0; never a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        real = isinstance(value, numbers.Real) and float(value).is_integer()
        return int(value) if real else None


def apart_seed(seed: int, key: int) -> int:
    """The seed of stream ``key`` of a run of seed ``seed``, apart from the landscape's own
    draws: 62 bits hashed from (seed, key) by numpy's ``SeedSequence``, with bit 62 set. It
    lies in [2⁶², 2⁶³), so it differs from every smaller seed (a landscape's data or disorder
    is drawn with its seed as given), and the hash keeps the (seed, key) streams apart."""
    seed = check_count("seed", seed, 0)
    state = np.random.SeedSequence(seed, spawn_key=(int(key),)).generate_state(1, np.uint64)[0]
    return (1 << 62) | (int(state) >> 2)


def check_states(name: str, x: Tensor, dim: int) -> None:
    """A ``UserError`` unless ``x`` is a finite tensor of shape (..., dim)."""
    if not isinstance(x, Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != dim:
        raise UserError(f"{name} must have shape (..., {dim}), got {tuple(x.shape)}")
    if x.device.type != "meta" and not bool(torch.isfinite(x).all()):   # meta: no values
        raise UserError(f"{name} has non-finite entries")


def psd_tolerances(dtype: torch.dtype, dim: int) -> tuple[float, float]:
    """(asymmetry, eigenvalue) tolerances of a symmetric PSD check, both *relative*: a matrix
    passes when max|M − Mᵀ| ≤ √eps · max|M| and λ_min ≥ −64 d eps · max|λ| (eps of ``dtype``;
    the round-off of a symmetric product grows with its summation length, a genuine asymmetry
    is a sizeable fraction of the entries). Absolute tolerances refused a rank-deficient
    matrix of scale 10⁶ (λ_min = −1.4e−10 from round-off) and accepted an indefinite or
    non-symmetric one of scale 10⁻¹³."""
    eps = torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps
    return eps ** 0.5, 64 * dim * eps


def check_psd_matrix(name: str, mat: Tensor, dim: int, *, definite: bool = False,
                     round_off: torch.dtype | None = None) -> Tensor:
    """``mat`` in float64 if it is a finite, symmetric, positive semi-definite (``definite``:
    positive definite, λ_min above the round-off level) (dim, dim) matrix up to the round-off
    of ``round_off`` (default its own dtype; :func:`psd_tolerances`), else a ``UserError``
    naming it and the failed property."""
    mat = torch.as_tensor(mat)
    if mat.shape != (dim, dim):
        raise UserError(f"{name} must be a ({dim}, {dim}) matrix, got {tuple(mat.shape)}")
    if not bool(torch.isfinite(mat).all()):
        raise UserError(f"{name} has non-finite entries")
    sym_tol, eig_tol = psd_tolerances(round_off or mat.dtype, dim)
    d = mat.double()
    scale = float(d.abs().max())
    asym = float((d - d.T).abs().max())
    if asym > sym_tol * scale:
        raise UserError(f"{name} must be symmetric: max|M − Mᵀ| = {asym:.3g} with entries "
                        f"up to {scale:.3g}")
    evals = torch.linalg.eigvalsh(d)
    lo, top = float(evals.min()), float(evals.abs().max())
    if definite and not lo > eig_tol * top:
        raise UserError(f"{name} must be positive definite: its eigenvalues run from {lo:.3g} "
                        f"to {top:.3g} (numerically singular below {eig_tol * top:.3g})")
    if lo < -eig_tol * top:
        raise UserError(f"{name} must be positive semi-definite; its smallest eigenvalue is "
                        f"{lo:.3g} (largest |λ| {top:.3g})")
    return d


def _map_tensors(value, fn: Callable[[Tensor], Tensor]):
    """``value`` with every tensor inside it replaced by ``fn(tensor)``; containers without
    tensors come back as the same object (so ``_apply`` leaves them alone)."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, Landscape):
        return value._apply(fn)
    if isinstance(value, nn.Module):
        return value._apply(fn)
    if isinstance(value, (list, tuple)):
        items = [_map_tensors(v, fn) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        if isinstance(value, list):
            return items
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        items = {k: _map_tensors(v, fn) for k, v in value.items()}
        if all(items[k] is v for k, v in value.items()):
            return value
        return type(value)(items)
    return value


def _iter_tensors(values) -> Iterator[Tensor]:
    for value in values:
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, Landscape):
            yield from value._tensors()
        elif isinstance(value, nn.Module):
            yield from value.parameters()
            yield from value.buffers()
        elif isinstance(value, (list, tuple)):
            yield from _iter_tensors(value)
        elif isinstance(value, dict):
            yield from _iter_tensors(value.values())


def _take(per: Tensor, idx: Tensor) -> Tensor:
    """per[..., idx] with idx either (m,) or (..., m) matching per's leading dims (idx is
    moved to per's device: indices drawn on the CPU index chains anywhere)."""
    idx = idx.to(per.device)
    if idx.ndim == 1:
        return per[..., idx]
    return torch.gather(per, -1, idx.expand(*per.shape[:-1], idx.shape[-1]))


__all__ = ["Landscape", "AnalyticLoss"]

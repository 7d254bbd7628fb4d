"""A minimal linear-operator base shared by every curvature matrix.

Subclasses implement ``_matvec`` on flat vectors; estimators (Lanczos, Hutchinson, SLQ, ...)
accept either a dense square tensor or a ``LinearOperator`` through :func:`as_operator`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from sgdlab.errors import checked_int_argument, warn
from sgdlab.models.modes import buffers_kept, writes_buffers

from .batches import (check_batch_loss, check_model_data, check_reshuffled_batches, draws_unseen,
                      fixed_randomness, gradient_hooks_held, iterate_batches, loss_derivatives,
                      plain_checkpoints, stochastic_modules)
from .blocking import BlockTuner, blocks_reproducible
from .params import copy_module


def kept_running_statistics(model) -> contextlib.AbstractContextManager:
    """The model's buffers restored on exit when its forward passes write into them
    (:func:`~sgdlab.models.modes.writes_buffers`: train-mode batch norm's running statistics,
    train-mode spectral norm's power-iteration vectors), without moving their version
    counters: a bump would invalidate the kept gradient graph that saved them (neither
    backward reads them). Every forward pass of a measurement then starts from the model's
    buffers as they are, so every batch and every product sees the same function, and the
    model is left as it was."""
    if not writes_buffers(model):
        return contextlib.nullcontext()
    return buffers_kept(model, keep_versions=True)


class LinearOperator:
    """Symmetric d x d operator acting on flat vectors of ``dtype`` on ``device``."""

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device):
        self.shape = (dim, dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_matvecs = 0

    def _matvec(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _matmat(self, m: Tensor) -> Tensor:
        """A @ M for (d, k) M; subclasses may batch the k products (default: column loop)."""
        return torch.stack([self._matvec(c) for c in m.T], dim=1)

    def matvec(self, v: Tensor) -> Tensor:
        """A @ v for a flat vector, or A @ V for a (d, k) matrix (see :meth:`matmat`)."""
        if v.dim() == 2:
            return self.matmat(v)
        self.num_matvecs += 1
        return self._matvec(v.to(self.dtype))

    def matmat(self, m: Tensor) -> Tensor:
        """A @ M for a (d, k) matrix (counted as k products)."""
        self.num_matvecs += m.shape[1]
        return self._matmat(m.to(self.dtype))

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        """diag(Mᵀ A M); subclasses may compute it without forming A M (default: from matmat)."""
        return (m * self._matmat(m)).sum(0)

    def quadratic_forms(self, m: Tensor) -> Tensor:
        """The k quadratic forms m_jᵀ A m_j of the columns of a (d, k) matrix (Hutchinson's
        samples; counted as k products). Equal to ``(M * (A @ M)).sum(0)`` up to round-off."""
        self.num_matvecs += m.shape[1]
        return self._quadratic_forms(m.to(self.dtype))

    # bytes of scratch memory the probes of one batched product may take (probe_block_size),
    # as any memory budget is written (2**28, "256MiB"); None: the device's default
    probe_memory_budget: int | str | None = None

    def _probe_bytes(self) -> int:
        """Working memory of one column of a batched product (subclasses refine it)."""
        return 4 * self.shape[0] * torch.finfo(self.dtype).bits // 8

    def memory_budget(self) -> int:
        """Bytes of scratch memory one batched product may take: ``probe_memory_budget`` when
        set; else 256 MiB on CPU and a quarter of the device's free memory on CUDA (where a
        fixed 256 MiB held the benchmark CNNs to blocks of 1-3 probes, 6-9x dearer per probe
        than blocks of 64: docs/design/curvature.md, "On a GPU")."""
        if self.probe_memory_budget is not None:
            from sgdlab.measure.passes import memory_budget_bytes

            return memory_budget_bytes(self.probe_memory_budget, "probe_memory_budget")
        # a quarter, not evaluation_memory_budget's half: scratch beside the operator's own passes
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0] // 4)
        return 256 * 2**20

    def probe_block_size(self, max_block: int | None = None) -> int:
        """How many probes to push through one ``matmat`` / ``quadratic_forms`` call: as many as
        fit in :meth:`memory_budget`, at most ``max_block`` (default 16 on CPU, where more does
        not pay: blocks of 8-16 were fastest on the d = 79,510 MLP benchmark; 64 on CUDA, still
        cheaper per probe than 32 on every benchmark problem)."""
        if max_block is None:
            max_block = 64 if self.device.type == "cuda" else 16
        return int(max(1, min(max_block, self.memory_budget() // max(1, self._probe_bytes()))))

    # whether batched products may cost more per column than single ones (model operators):
    # then the block size is measured (BlockTuner) instead of taken from the memory bound
    tune_blocks: bool = False

    def block_tuner(self, kind: str = "matmat", *, block_size: int | None = None,
                    cap: int | None = None) -> BlockTuner:
        """Block sizes for a run of ``kind`` products (``"matmat"`` or ``"quadratic_forms"``):
        ``block_size`` if given; else at most ``cap`` (default :meth:`probe_block_size`), and
        for operators with ``tune_blocks`` the size measured cheapest per column (the
        measurement is kept on the operator and reused by later estimators), or within
        :func:`~sgdlab.operators.blocking.reproducible_blocks` the size
        :meth:`reproducible_block_size` rules (no timing: the round-off does not vary)."""
        if block_size is not None:
            return BlockTuner(block_size, device=self.device, fixed=block_size)
        cap = self.probe_block_size() if cap is None else max(1, min(cap, self.probe_block_size()))
        # on CUDA a larger block was cheaper per column on every problem measured, and a first
        # block of a new size pays one-off set-up that would stop the measurement early
        if not self.tune_blocks or self.device.type == "cuda":
            return BlockTuner(cap, device=self.device, fixed=cap)
        if blocks_reproducible():
            size = max(1, min(cap, self.reproducible_block_size(cap)))
            return BlockTuner(size, device=self.device, fixed=size)
        tuners = self.__dict__.setdefault("_block_tuners", {})
        if (kind, cap) not in tuners:
            tuners[kind, cap] = BlockTuner(cap, device=self.device)
        return tuners[kind, cap]

    def reproducible_block_size(self, cap: int) -> int:
        """The block size taken, untimed, within :func:`~sgdlab.operators.blocking.
        reproducible_blocks` (at most ``cap``, the memory bound): ``cap`` here; model
        operators rule by their layers (:meth:`ModelOperator.reproducible_block_size`)."""
        return cap

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def __mul__(self, c: float) -> "LinearOperator":
        return _Scaled(self, float(c))

    __rmul__ = __mul__

    def __add__(self, other: "LinearOperator | Tensor") -> "LinearOperator":
        return _Sum(self, as_operator(other))

    def __neg__(self) -> "LinearOperator":
        return _Scaled(self, -1.0)

    def __sub__(self, other: "LinearOperator | Tensor") -> "LinearOperator":
        return _Sum(self, _Scaled(as_operator(other), -1.0))

    def to_dense(self, chunk_size: int = 256) -> Tensor:
        """Materialise by d products, ``chunk_size`` columns at a time (small problems only)."""
        # a negative chunk took no product and returned torch.empty's memory as the matrix
        chunk_size = checked_int_argument("chunk_size", chunk_size, 1, ": columns per pass")
        d = self.shape[0]
        out = torch.empty(d, d, dtype=self.dtype, device=self.device)
        for i in range(0, d, chunk_size):
            j = min(i + chunk_size, d)
            eye = torch.zeros(d, j - i, dtype=self.dtype, device=self.device)
            eye[i:j] = torch.eye(j - i, dtype=self.dtype, device=self.device)
            out[:, i:j] = self.matmat(eye)
        return out

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` view (float64 numpy in and out)."""
        from scipy.sparse.linalg import LinearOperator as ScipyOp

        def mv(x):
            v = torch.as_tensor(x.reshape(-1), dtype=self.dtype, device=self.device)
            return self.matvec(v).detach().cpu().double().numpy()

        return ScipyOp(self.shape, matvec=mv, rmatvec=mv, dtype="float64")


class ModelOperator(LinearOperator):
    """Base of the curvature operators of a model's loss: d = number of trainable parameters,
    dtype and device those of the parameters.

    A model with modules in train mode may draw random numbers in its forward pass (dropout
    masks): every product would then see other masks, and the "operator" would not even be a
    function (the same v, another Hv). Each batch's forward passes therefore run with the
    random generators seeded per batch (:meth:`batches`, :meth:`fixed_randomness`), so every
    product sees one fixed draw; the global generators are left as they were. With dropout in
    train mode that is the curvature under one draw of the masks, which a warning says (call
    ``model.eval()`` for the network without dropout); so it does for a forward of one's own
    that draws (``F.dropout(h, p, self.training)``), found by one no-grad pass over the first
    samples (:func:`~sgdlab.operators.batches.draws_unseen`). A loader that reshuffles its
    samples gives other batches, and so other masks per sample, on every pass: refused with
    dropout modules in train mode (not for a forward of one's own, which no module names), as
    it is where batch norm normalises by each batch's statistics
    (:func:`~sgdlab.operators.batches.check_reshuffled_batches`).

    The products are those of the loss's own derivatives: no gradient hook the user put on
    the model runs, in the forward passes (:meth:`fixed_randomness`) nor in the backward
    passes through a kept graph (:func:`~sgdlab.operators.batches.gradient_hooks_held`)."""

    def __init__(self, model, loss_fn, data, *, data_optional: bool = False):
        from .params import flat_dtype, num_params, require_trainable

        # data_optional: an operator built from precomputed gradients may have no data
        if data is not None or not data_optional:
            check_batch_loss(loss_fn, data)
            check_model_data(model, loss_fn, data)
            check_reshuffled_batches(model, data)
        self.params = require_trainable(model)
        first = next(iter(self.params.values()))
        # parameters of several dtypes: products in the widest, as their flat vectors are
        super().__init__(num_params(model), flat_dtype(self.params.values()), first.device)
        self.model, self.loss_fn, self.data = model, loss_fn, data
        stochastic = stochastic_modules(model)
        if stochastic:
            warn(
                f"{', '.join(stochastic[:3])}{' ...' if len(stochastic) > 3 else ''}: "
                "dropout in train mode, so the curvature is that of the loss under one fixed "
                "draw of the dropout masks per batch; call model.eval() for the network "
                "without dropout", UserWarning)
        elif data is not None and draws_unseen(model, data, first.device):
            # F.dropout(h, p, self.training) in a forward of one's own: no module says so
            warn("the model's forward pass draws random numbers in train mode (F.dropout or "
                 "noise in a forward of its own?), so the curvature is that of the loss "
                 "under one fixed draw per batch; call model.eval() for the network without "
                 "them", UserWarning)
        if self.dtype in (torch.float16, torch.bfloat16):
            # bfloat16's 8-bit mantissa: a 3-4-2 MLP's dense Hessian 0.8% off float64's
            warn(f"the model's parameters are {self.dtype}: its curvature products carry "
                 "that precision's rounding (bfloat16: ~1%; the estimators keep their own "
                 "vectors in float32); measure a float32 or float64 copy "
                 "(sgdlab.operators.params.copy_module(model).double(), with the data cast "
                 "alike; it also copies a model with the hook-based nn.utils.weight_norm, "
                 "which copy.deepcopy refuses)", UserWarning)

    # the backward passes through a graph kept from an earlier forward pass run here, where
    # a parameter's tensor hooks would fire
    def matvec(self, v: Tensor) -> Tensor:
        with gradient_hooks_held(self.model):
            return super().matvec(v)

    def matmat(self, m: Tensor) -> Tensor:
        with gradient_hooks_held(self.model):
            return super().matmat(m)

    def quadratic_forms(self, m: Tensor) -> Tensor:
        with gradient_hooks_held(self.model):
            return super().quadratic_forms(m)

    @contextlib.contextmanager
    def fixed_randomness(self, batch: int) -> Iterator[None]:
        """Within: the model's randomness fixed for batch ``batch``
        (:func:`~sgdlab.operators.batches.fixed_randomness`), and the running statistics
        that train-mode batch norm moves at each forward pass restored on exit: measuring
        the model must not change it (every product over a loader runs the forward again);
        reentrant activation checkpoints run plainly, so they can be differentiated
        (:func:`~sgdlab.operators.batches.plain_checkpoints`); the loss's own derivatives
        (:func:`~sgdlab.operators.batches.loss_derivatives`)."""
        with fixed_randomness(self.model, self.device, batch), kept_running_statistics(
                self.model), plain_checkpoints(), loss_derivatives(self.model):
            yield

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The data's ``(x, y)`` batches on the operator's device; the loop's body runs
        within :meth:`fixed_randomness` of its batch (so consume the whole iterator)."""
        for i, (x, y) in enumerate(iterate_batches(self.data, self.device)):
            with self.fixed_randomness(i):
                yield x, y

    tune_blocks = True

    def reproducible_block_size(self, cap: int) -> int:
        """1 for a model with convolutions or recurrent layers, whose batched products cost
        more per column than single ones on CPU (zhu-lenet: blocks of 2 1.27x, of 4 1.34x);
        else ``cap``, the memory bound (a 784-14-10 MLP: blocks of 16 0.53x the single
        products): docs/design/curvature.md, "Probe blocks"."""
        costly = (torch.nn.modules.conv._ConvNd, torch.nn.RNNBase)
        return 1 if any(isinstance(m, costly) for m in self.model.modules()) else cap

    def _options(self) -> dict:
        """Keyword arguments (besides model, loss_fn, data) that rebuild this operator."""
        return {}

    def to(self, dtype: torch.dtype) -> "ModelOperator":
        """The same operator in ``dtype``: rebuilt on a copy of the model and of the data in
        that dtype (e.g. float64 products for a float32 model; this one is left as it is)."""
        if dtype == self.dtype:
            return self
        from .batches import cast_batches

        model = copy_module(self.model).to(dtype)
        return type(self)(model, self.loss_fn, cast_batches(self.data, dtype), **self._options())


class DenseOperator(LinearOperator):
    """Wrap an explicit symmetric matrix so estimators can be checked on dense references."""

    def __init__(self, matrix: Tensor):
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matvec(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def _matmat(self, m: Tensor) -> Tensor:
        return self.matrix @ m

    def _probe_bytes(self) -> int:
        return 2 * self.shape[0] * torch.finfo(self.dtype).bits // 8

    def to_dense(self, chunk_size: int = 256) -> Tensor:
        return self.matrix

    def to(self, dtype: torch.dtype) -> "DenseOperator":
        return self if dtype == self.dtype else DenseOperator(self.matrix.to(dtype))


class _Wrapped(LinearOperator):
    """An operator whose products are ``op``'s, transformed (a scale, a cast): same products,
    same costs, so it takes ``op``'s block sizes, timed or ruled, and a sum holding it
    (-H + σI) times or rules its blocks as ``op``'s."""

    def __init__(self, op: LinearOperator, dtype: torch.dtype):
        super().__init__(op.shape[0], dtype, op.device)
        self.op = op
        self.tune_blocks = op.tune_blocks

    def block_tuner(self, kind: str = "matmat", **kw) -> BlockTuner:
        return self.op.block_tuner(kind, **kw)

    def reproducible_block_size(self, cap: int) -> int:
        return self.op.reproducible_block_size(cap)


class _Scaled(_Wrapped):
    """c · A (e.g. −H for the most negative eigenvalues by a largest-eigenvalue method)."""

    def __init__(self, op: LinearOperator, c: float):
        super().__init__(op, op.dtype)
        self.c = c

    def _matvec(self, v: Tensor) -> Tensor:
        return self.c * self.op.matvec(v)

    def _matmat(self, m: Tensor) -> Tensor:
        return self.c * self.op.matmat(m)

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        return self.c * self.op.quadratic_forms(m)

    def _probe_bytes(self) -> int:
        return self.op._probe_bytes()


class _Sum(LinearOperator):
    """A + B (e.g. a shift H + σI)."""

    def __init__(self, a: LinearOperator, b: LinearOperator):
        if a.shape != b.shape:
            raise ValueError(f"operator shapes differ: {a.shape} vs {b.shape}")
        super().__init__(a.shape[0], a.dtype, a.device)
        self.a, self.b = a, b
        self.tune_blocks = a.tune_blocks or b.tune_blocks

    def _matvec(self, v: Tensor) -> Tensor:
        return self.a.matvec(v) + self.b.matvec(v)

    def _matmat(self, m: Tensor) -> Tensor:
        return self.a.matmat(m) + self.b.matmat(m)

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        return self.a.quadratic_forms(m) + self.b.quadratic_forms(m)

    def reproducible_block_size(self, cap: int) -> int:
        return min(self.a.reproducible_block_size(cap), self.b.reproducible_block_size(cap))

    def _probe_bytes(self) -> int:
        return max(self.a._probe_bytes(), self.b._probe_bytes())


def as_operator(a: "Tensor | LinearOperator") -> LinearOperator:
    return a if isinstance(a, LinearOperator) else DenseOperator(a)

"""The recurrent networks of Chaudhari's thesis (2018, §3.3.1 (iii), §3.3.4, §3.3.5): LSTMs
that read a sequence of tokens and predict the next token at every position.

A model takes int64 tokens ``x`` shaped (N, T) and returns logits shaped (N, V, T): position t
holds the scores for the token after ``x[:, t]`` (a text dataset's ``y[:, t]``), so
``F.cross_entropy(logits, y)`` is the mean over tokens and :func:`sgdlab.accuracy.argmax_hits`
counts per-token hits (it reads (N, C, *d) scores).

Every sequence starts from the model's initial state (zeros, or learnt for
``char-lstm-autograd``): no hidden state is carried from one batch to the next. Zaremba et
al.'s (2014) and Karpathy et al.'s (2015) pipelines cut one long text into consecutive
windows and carry the final state of a batch into the next (truncated backpropagation through
time); sgdlab's windows are independent samples, so the state starts afresh at each window and
the first tokens of a window are predicted from less context. This is a departure from the
thesis' pipelines (docs/FIDELITY.md#chaudhari-ch2-6).

Two implementations of the LSTM layers, with the same parameters under the same names (a
test checks that they agree): ``impl="torch"`` is ``nn.LSTM`` (the default of ``char-lstm`` and
``ptb-lstm``: its fused kernel trains 1.4-4x faster on a CPU thread, docs/design/data-models.md);
``impl="cells"`` is :class:`LSTMStack`, the layers written as matmuls (one for the inputs of all
time steps, one per step for the recurrence), which ``torch.func.vmap`` batches: per-sample
gradients and vmapped perturbed evaluations (sharpness, local entropy) take one vectorised pass,
where ``nn.LSTM`` makes vmap fail and sgdlab fall back to one pass per sample, with a warning.
``char-lstm-autograd`` (one bias per gate, a learnt initial state) is always written out.
Curvature (Hessian-vector products) is autograd's double backward for both on a CPU; on a GPU
``nn.LSTM`` runs cuDNN, which has no double backward and no backward in eval mode: curvature and
eval-mode gradients there need ``impl="cells"``.

=======================  ================================================  ===============
name                     thesis definition                                 stated
=======================  ================================================  ===============
``char-lstm-autograd``   §3.3.1 (iii) "char-lstm": 48 LSTM units on        32,640
                         96-bit one-hot characters (autograd's example)
``char-lstm``            §3.3.5 "char-LSTM": 2 layers of 128 units,        —
                         vocabulary 87 (Karpathy et al. 2015)
``ptb-lstm``             §3.3.4 "PTB-LSTM": 2 layers of 1500 units         "about 66 million"
                         (Zaremba et al.'s large model)
=======================  ================================================  ===============
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError, checked_float
from .registry import check_positive, check_prob, register_model

_THESIS = "Chaudhari 2018, A picture of the energy landscape of deep neural networks (thesis)"
IMPLS = ("cells", "torch")

#: Zaremba et al.'s (2014) regularized LSTMs: the ``ptb-lstm`` option sets (its default is the
#: large one, the thesis' PTB-LSTM)
ZAREMBA_LARGE = {"hidden": 1500, "dropout": 0.65, "init_scale": 0.04}
ZAREMBA_MEDIUM = {"hidden": 650, "dropout": 0.5, "init_scale": 0.05}
ZAREMBA_SMALL = {"hidden": 200, "dropout": 0.0, "init_scale": 0.1}


def _sequence_length(name: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 1:
        raise UserError(f"model {name!r} reads token sequences: input_shape must be (T,), got "
                        f"{input_shape}")
    return input_shape[0]


def _check_tokens(name: str, x: Tensor) -> None:
    if x.is_floating_point() or x.is_complex() or x.dim() != 2:
        raise UserError(f"model {name!r} takes integer tokens shaped (N, T), got a "
                        f"{x.dtype} tensor shaped {tuple(x.shape)}")


def lstm_step(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM update from the pre-activations ``gates`` (N, 4H) in torch's order (input,
    forget, cell, output) and the cell ``c``: returns ``(h, c)``."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class LSTMStack(nn.Module):
    """``layers`` LSTM layers over (N, T, input_size) inputs, batch first, written as matmuls.

    Parameters are named as ``nn.LSTM`` names them (``weight_ih_l0``, ``weight_hh_l0``,
    ``bias_ih_l0``, ``bias_hh_l0``, ...) with the same shapes and gate order, so state dicts
    move between the two. ``two_biases=False`` keeps one bias per gate (``bias_l0``: the sum
    of torch's two is the same function). Integer inputs (N, T) are read as one-hot vectors of
    ``input_size`` classes. ``dropout`` is applied to each layer's output but the
    last (``nn.LSTM``'s rule); ``h0``/``c0`` (N, H) per layer start the sequences (zeros when
    None). Returns the last layer's outputs (N, T, H).
    """

    def __init__(self, input_size: int, hidden: int, layers: int = 1, *, dropout: float = 0.0,
                 two_biases: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden, layers
        self.dropout, self.two_biases = dropout, two_biases
        for k in range(layers):
            n_in = input_size if k == 0 else hidden
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden, n_in)))
            self.register_parameter(f"weight_hh_l{k}",
                                    nn.Parameter(torch.empty(4 * hidden, hidden)))
            for b in (("bias_ih", "bias_hh") if two_biases else ("bias",)):
                self.register_parameter(f"{b}_l{k}", nn.Parameter(torch.empty(4 * hidden)))
        bound = 1 / math.sqrt(hidden)          # nn.LSTM's default initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_bias(self, k: int) -> Tensor:
        if self.two_biases:
            return getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}")
        return getattr(self, f"bias_l{k}")

    def forward(self, x: Tensor, h0: list[Tensor] | None = None,
                c0: list[Tensor] | None = None) -> Tensor:
        n = x.shape[0]
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            # the inputs' share of every step's gates in one matmul; a one-hot input's is a
            # column of weight_ih (a lookup: also under vmap, where F.one_hot fails)
            if k == 0 and not x.is_floating_point():
                xw = F.embedding(x, w_ih.t()) + self.layer_bias(k)
            else:
                xw = F.linear(x, w_ih, self.layer_bias(k))
            zeros = xw.new_zeros(n, self.hidden_size)
            h = zeros if h0 is None else h0[k]
            c = zeros if c0 is None else c0[k]
            outs = []
            # unbind, not xw[:, t]: each select's backward would write a zero-filled copy of
            # all of xw (T steps: T full-size fills and adds; 2.4x the whole gradient's time)
            for xt in xw.unbind(1):
                h, c = lstm_step(xt + F.linear(h, w_hh), c)
                outs.append(h)
            x = torch.stack(outs, dim=1)
        return x


def _recurrence(impl: str, input_size: int, hidden: int, layers: int, dropout: float
                ) -> nn.Module:
    if impl not in IMPLS:
        raise UserError(f"option 'impl' must be one of {', '.join(IMPLS)}, got {impl!r}")
    if impl == "torch":
        # (between layers only: torch warns of a dropout given to one layer)
        return nn.LSTM(input_size, hidden, layers, batch_first=True,
                       dropout=dropout if layers > 1 else 0.0)
    return LSTMStack(input_size, hidden, layers, dropout=dropout)


class TokenLSTM(nn.Module):
    """Tokens (N, T) -> [one-hot or embedding] -> [dropout] -> LSTM layers -> [dropout] ->
    linear -> logits (N, V, T).

    ``embedding=None`` feeds one-hot vectors of the vocabulary (Karpathy et al.'s char-rnn);
    an int is the width of a learnt embedding (Zaremba et al.). ``dropout`` is applied to every
    non-recurrent connection: the LSTM's input (only with an embedding: char-rnn drops no
    one-hot input), between layers and before the output layer (Zaremba et al.; char-rnn's
    ``dropout`` option drops the same connections but the input).
    """

    def __init__(self, name: str, input_shape: tuple[int, ...], vocab: int, *, hidden: int,
                 layers: int, dropout: float, embedding: int | None, impl: str,
                 init_scale: float | None, forget_bias: float | None = None) -> None:
        super().__init__()
        _sequence_length(name, input_shape)
        hidden, layers = check_positive("hidden", hidden), check_positive("layers", layers)
        check_prob("dropout", dropout)
        if vocab < 2:
            raise UserError(f"model {name!r} needs a vocabulary of at least 2 tokens "
                            f"(num_outputs), got {vocab}")
        self.name, self.vocab, self.dropout = name, vocab, dropout
        if embedding is not None:
            embedding = check_positive("embedding", embedding)
            self.embedding: nn.Embedding | None = nn.Embedding(vocab, embedding)
        else:
            self.embedding = None
        self.lstm = _recurrence(impl, embedding or vocab, hidden, layers, dropout)
        self.decoder = nn.Linear(hidden, vocab)
        if init_scale is not None:
            init_scale = checked_float("option 'init_scale'", init_scale, 0.0, strict=True)
            for p in self.parameters():
                nn.init.uniform_(p, -init_scale, init_scale)
        if forget_bias is not None:            # char-rnn: forget gates' i2h biases set to 1
            with torch.no_grad():
                for k in range(layers):
                    getattr(self.lstm, f"bias_ih_l{k}")[hidden:2 * hidden] = forget_bias

    def forward(self, x: Tensor) -> Tensor:
        _check_tokens(self.name, x)
        if self.embedding is not None:
            z = F.dropout(self.embedding(x), self.dropout, self.training)
        elif isinstance(self.lstm, nn.LSTM):   # one-hot vectors (F.one_hot fails under vmap)
            w = self.decoder.weight
            z = F.embedding(x, torch.eye(self.vocab, dtype=w.dtype, device=w.device))
        else:
            z = x                              # LSTMStack reads tokens as one-hot vectors
        out = self.lstm(z)
        if isinstance(out, tuple):             # nn.LSTM: (outputs, (h, c))
            out = out[0]
        out = F.dropout(out, self.dropout, self.training)
        return self.decoder(out).transpose(1, 2)


@register_model("ptb-lstm", paper=_THESIS + ", §3.3.4 (Zaremba et al. 2014, large model)",
                description="word embedding 1500, 2 LSTM layers of 1500 unrolled for 35 steps, "
                "dropout 0.65 on non-recurrent connections, 1500 -> V output layer",
                reference_input=(35,), reference_outputs=10_000, stated_params=66_000_000,
                inputs="tokens",
                notes="stated 'about 66 million weights'; ours 66,034,000 with V = 10,000 "
                "(two biases per gate as Zaremba et al.'s Lua code, no weight tying); "
                "ZAREMBA_MEDIUM (650 units, dropout 0.5, init 0.05) and ZAREMBA_SMALL are "
                "option sets; no hidden state carried across batches")
def ptb_lstm(input_shape, num_outputs, *, hidden: int = 1500, layers: int = 2,
             dropout: float = 0.65, init_scale: float = 0.04, impl: str = "torch"
             ) -> nn.Module:
    return TokenLSTM("ptb-lstm", input_shape, num_outputs, hidden=hidden, layers=layers,
                     dropout=dropout, embedding=hidden, impl=impl, init_scale=init_scale)


@register_model("char-lstm", paper=_THESIS + ", §3.3.5 (Karpathy et al. 2015, char-rnn)",
                description="one-hot characters -> 2 LSTM layers of 128 unrolled for 50 steps "
                "-> linear softmax layer over a vocabulary of 87",
                reference_input=(50,), reference_outputs=87, inputs="tokens",
                notes="the thesis states no count; 254,423 with V = 87 (two biases per gate, "
                "as char-rnn's i2h and h2h linear layers). It mentions no dropout: char-rnn's "
                "default 0. Init uniform(-0.08, 0.08), forget-gate biases 1 (char-rnn)")
def char_lstm(input_shape, num_outputs, *, hidden: int = 128, layers: int = 2,
              dropout: float = 0.0, init_scale: float = 0.08, forget_bias: float = 1.0,
              impl: str = "torch") -> nn.Module:
    return TokenLSTM("char-lstm", input_shape, num_outputs, hidden=hidden, layers=layers,
                     dropout=dropout, embedding=None, impl=impl, init_scale=init_scale,
                     forget_bias=forget_bias)


class AutogradLSTM(nn.Module):
    """autograd's example LSTM (HIPS/autograd ``examples/lstm.py``): one-hot characters, one
    layer with one bias per gate, a learnt initial hidden state and cell, a linear output.

    Parameters: ``lstm`` (:class:`LSTMStack` with one bias), ``init_hidden``, ``init_cell``
    (H,), ``decoder``. The example also scores the first character from the initial state
    alone (T + 1 outputs for T characters); here position t scores the token after ``x[:, t]``
    as every sgdlab sequence model does (T outputs), with the same parameters.
    """

    def __init__(self, input_shape: tuple[int, ...], vocab: int, *, hidden: int,
                 init_scale: float) -> None:
        super().__init__()
        _sequence_length("char-lstm-autograd", input_shape)
        hidden = check_positive("hidden", hidden)
        if vocab < 2:
            raise UserError(f"model 'char-lstm-autograd' needs a vocabulary of at least 2 "
                            f"tokens (num_outputs), got {vocab}")
        init_scale = checked_float("option 'init_scale'", init_scale, 0.0, strict=True)
        self.vocab = vocab
        self.lstm = LSTMStack(vocab, hidden, 1, two_biases=False)
        self.init_hidden = nn.Parameter(torch.empty(hidden))
        self.init_cell = nn.Parameter(torch.empty(hidden))
        self.decoder = nn.Linear(hidden, vocab)
        for p in self.parameters():            # the example: normal(0, param_scale = 0.01)
            nn.init.normal_(p, 0.0, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        _check_tokens("char-lstm-autograd", x)
        n = x.shape[0]
        out = self.lstm(x, [self.init_hidden.expand(n, -1)], [self.init_cell.expand(n, -1)])
        return self.decoder(out).transpose(1, 2)


@register_model("char-lstm-autograd", paper=_THESIS + ", §3.3.1 (iii) ('char-lstm', Fig. 3.4b)",
                description="96-bit one-hot characters -> LSTM of 48 units (one bias per gate, "
                "learnt initial state and cell) -> 48 -> 96 output layer",
                reference_input=(32,), reference_outputs=96, stated_params=32_640, inputs="tokens",
                notes="matches the stated 32,640 exactly: autograd's example LSTM, which the "
                "thesis computes its Hessian with; it also predicts the first character "
                "from the initial state, which the (N, V, T) outputs leave out")
def char_lstm_autograd(input_shape, num_outputs, *, hidden: int = 48, init_scale: float = 0.01
                       ) -> nn.Module:
    return AutogradLSTM(tuple(input_shape), num_outputs, hidden=hidden, init_scale=init_scale)

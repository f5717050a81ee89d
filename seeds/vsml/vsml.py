"""VSML: every weight of a dense layer is a tiny LSTM; all LSTMs share one set of parameters.

Kirsch & Schmidhuber 2021; thesis ch. 3 (Eq. 3.7, Alg. 8/13) and App. B.3.
A layer with A inputs and C outputs holds A*C LSTM states s_ac = (h_ac, c_ac), each of size N.
Each tick, LSTM (a, c) reads the forward message of its input unit a and the backward message
of its output unit c (Eq. 3.7). New messages are affine maps of h, averaged (not summed,
App. B.3) over the other axis:
    fwd_c = mean_a f_fwd(h_ac)   -> input of the next layer (or the logits),
    bwd_a = mean_c f_bwd(h_ac)   -> feedback to the previous layer.
The input x_a enters as element 0 of the first layer's forward message, the prediction is
element 0 of the last layer's forward message, and the error e = softmax(y_hat) - onehot(y)
(the gradient of the cross-entropy w.r.t. the logits) enters as element 0 of the last layer's
backward message. Learning happens only in the LSTM states: no gradients at meta-test time.

Shapes: B trajectories, A inputs, C outputs of a layer, N state size, M message size.

Cloned mode (`cloned=True`, thesis sec. 3.3.2, App. B.3.1): the same sub-LSTM is trained by
train.py (mode "clone") to implement a given learning algorithm: each LSTM stores a weight
w_ab = scale * c_ab[0] and a bias b_ab = scale * c_ab[1] in its cell state; a tick with input x_a
(and no error) must output tanh(x_a) w_ab + b_ab as element 0 of its forward message, and a tick
with x_a and the error e_b must move (w, b) by one SGD step. At meta-test the state is frozen
during the prediction, and after learning only the two dimensions holding (w, b) are kept
(clipped to +-state_clip, App. B.3.1); everything else is reset.

evaluate.py relies only on VSML(**model_kwargs), load_state_dict, and the three methods
init_state / predict / learn with the signatures below; everything else may change.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOGIT_BOUND = 100.0  # logits are squashed to +-100 with tanh, as in App. B.3.2


def affine(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """lin(x), where lin's weight may also be a population (P, out, in) of weights (ES mode).

    With a population, the batch (leading) axis of x holds P equal blocks, block p using weight p.
    """
    w, b = lin.weight, lin.bias
    if w.dim() == 2:
        return F.linear(x, w, b)
    xp = x.reshape(w.shape[0], -1, x.shape[-1])  # (P, rows, in)
    out = torch.baddbmm(b[:, None], xp, w.transpose(1, 2)) if b is not None else xp @ w.transpose(1, 2)
    return out.reshape(*x.shape[:-1], w.shape[1])


class SubLSTM(nn.Module):
    """The shared parameters theta of one VSML layer: an LSTM cell plus the message maps."""

    def __init__(self, state_size: int, msg_size: int, forget_bias: float, input_bias: float):
        super().__init__()
        n, m = state_size, msg_size
        # The LSTM input is [fwd_a, bwd_c, h_ac]. Its projection is split in three, which is the
        # same function as one matrix on the concatenation, but the fwd part depends only on a
        # and the bwd part only on c, so they are computed once per unit, not once per LSTM.
        self.from_fwd = nn.Linear(m, 4 * n)
        self.from_bwd = nn.Linear(m, 4 * n, bias=False)
        self.from_h = nn.Linear(n, 4 * n, bias=False)
        std = (2 * m + n) ** -0.5
        for lin in (self.from_fwd, self.from_bwd, self.from_h):
            nn.init.trunc_normal_(lin.weight, std=std, a=-2 * std, b=2 * std)
        with torch.no_grad():  # gate order i, f, o, g
            self.from_fwd.bias.zero_()
            self.from_fwd.bias[:n] = input_bias  # small writes at first ...
            self.from_fwd.bias[n : 2 * n] = forget_bias  # ... and long memory
        self.to_fwd = nn.Linear(n, m)  # f_fwd: R^N -> R^M
        self.to_bwd = nn.Linear(n, m)  # f_bwd: R^N -> R^M

    def forward(self, h, c, fwd, bwd):
        """One tick of all A*C LSTMs. h, c: (B, A, C, N); fwd: (B, A, M); bwd: (B, C, M)."""
        gates = affine(h, self.from_h) + affine(fwd, self.from_fwd)[:, :, None]
        gates = gates + affine(bwd, self.from_bwd)[:, None]
        n = h.shape[-1]
        i, f, o = torch.sigmoid(gates[..., : 3 * n]).chunk(3, dim=-1)  # each (B, A, C, N)
        c = f * c + i * torch.tanh(gates[..., 3 * n :])
        h = o * torch.tanh(c)
        # f_fwd, f_bwd are affine, so the mean of the messages is the message of the mean state.
        # (B, C, M), (B, A, M)
        return h, c, affine(h.mean(dim=1), self.to_fwd), affine(h.mean(dim=2), self.to_bwd)


@dataclass
class State:
    """Everything a VSML network has learned so far (the learned variables V_L), per layer k."""

    h: list  # (B, A_k, C_k, N)
    c: list  # (B, A_k, C_k, N)
    fwd: list  # incoming forward message (B, A_k, M)
    bwd: list  # incoming backward message (B, C_k, M)


class VSML(nn.Module):
    """A VSML network with layer sizes `sizes` = [inputs, hidden..., classes].

    backward_pass: after each prediction, tick the layers once more in reverse order with the
    fresh error (as in the reference implementation's `backward_pass` option); without it the
    error is only seen together with the next input.
    """

    def __init__(
        self,
        sizes: list,
        state_size: int,
        msg_size: int,
        ticks: int,
        backward_pass: bool,
        share_layers: bool,
        forget_bias: float,
        input_bias: float,
        state_init_scale: float,
        cloned: bool = False,
        clone_scale: float = 4.0,
        state_clip: float = 4.0,
    ):
        super().__init__()
        self.cloned, self.clone_scale, self.state_clip = cloned, clone_scale, state_clip
        self.sizes, self.n, self.m = list(sizes), state_size, msg_size
        self.ticks, self.backward_pass, self.state_init_scale = ticks, backward_pass, state_init_scale
        num_cells = 1 if share_layers else len(sizes) - 1
        self.cells = nn.ModuleList(
            SubLSTM(state_size, msg_size, forget_bias, input_bias) for _ in range(num_cells)
        )

    def cell(self, k: int) -> SubLSTM:
        return self.cells[min(k, len(self.cells) - 1)]

    def init_state(self, batch: int, generator: torch.Generator | None = None) -> State:
        """Random LSTM states for `batch` independent learners (the start of every lifetime)."""
        p = next(self.parameters())
        h, c, fwd, bwd = [], [], [], []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            shape = (batch, a, b, self.n)
            h.append(torch.zeros(shape, device=p.device, dtype=p.dtype))
            noise = torch.randn(shape, generator=generator, dtype=p.dtype)
            scale = 0.0 if self.cloned else self.state_init_scale  # cloned: w = b = 0 at the start
            c.append(scale * noise.to(p.device))
            fwd.append(torch.zeros(batch, a, self.m, device=p.device, dtype=p.dtype))
            bwd.append(torch.zeros(batch, b, self.m, device=p.device, dtype=p.dtype))
        return State(h, c, fwd, bwd)

    def predict(self, state: State, x: torch.Tensor) -> tuple[State, torch.Tensor]:
        """Feed inputs x (B, D); return the new state and logits (B, classes). No label is seen."""
        new_state, logits = self._sweep(state, x, error=None)
        if self.cloned:  # forward computation only reads the weights (App. B.3.1: state frozen)
            return state, logits
        return new_state, logits

    def learn(self, state: State, x: torch.Tensor, logits: torch.Tensor, label: torch.Tensor) -> State:
        """Feed back the outcome of the last prediction: x (B, D), its logits, label (B,) int."""
        error = F.softmax(logits, dim=-1) - F.one_hot(label, logits.shape[-1]).to(logits.dtype)
        return self.learn_from_error(state, x, error)

    def learn_from_error(self, state: State, x: torch.Tensor, error: torch.Tensor) -> State:
        """Feed back an error (B, classes) at the outputs for input x (B, D)."""
        if self.cloned:  # one backward sweep; keep only the two dims that hold (w, b)
            state, _ = self._sweep(state, x, error=error)
            clip = self.state_clip
            c = [F.pad(ck[..., :2].clamp(-clip, clip), (0, self.n - 2)) for ck in state.c]
            return State([torch.zeros_like(hk) for hk in state.h], c, state.fwd,
                         [torch.zeros_like(b) for b in state.bwd])
        if self.backward_pass:
            state, _ = self._sweep(state, x, error=error)
            state.bwd[-1] = torch.zeros_like(state.bwd[-1])  # the error was consumed
            return state
        state.bwd[-1] = self._pad(error)  # seen with the next input
        return state

    def _pad(self, v: torch.Tensor) -> torch.Tensor:
        """(B, U) scalars per unit -> (B, U, M) messages with the scalar in element 0."""
        return F.pad(v[..., None], (0, self.m - 1))

    def _sweep(self, state: State, x: torch.Tensor, error: torch.Tensor | None):
        """Tick layers 1..K (forward sweep) or, when an error is given, K..1 (backward sweep)."""
        h, c, fwd, bwd = list(state.h), list(state.c), list(state.fwd), list(state.bwd)
        fwd[0] = self._pad(x)
        if error is not None:
            bwd[-1] = self._pad(error)
        num_layers = len(h)
        order = range(num_layers) if error is None else reversed(range(num_layers))
        logits = None
        for k in order:
            for _ in range(self.ticks):
                h[k], c[k], out_fwd, out_bwd = self.cell(k)(h[k], c[k], fwd[k], bwd[k])
            if k > 0:
                bwd[k - 1] = out_bwd
            if k < num_layers - 1:
                fwd[k + 1] = out_fwd
            else:
                logits = LOGIT_BOUND * torch.tanh(out_fwd[..., 0] / LOGIT_BOUND)  # (B, classes)
        return State(h, c, fwd, bwd), logits

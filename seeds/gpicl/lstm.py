"""The LSTM baseline of the GPICL seed (thesis sec. 5.4.1, Table 5.2; App. D.4).

PROTECTED: the baseline is the same for every variant. A black-box in-context learner with
the same tokens and the same objective (Eq. 5.2) as the Transformer, whose state is only its
hidden and cell vectors (sec. 5.4.2: state size bounds in-context learning).
"""

from torch import nn


class LSTMLearner(nn.Module):
    """tokens (B, T, E) -> logits (B, T, classes); causal by construction."""

    def __init__(self, token_size: int, num_classes: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(token_size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, tokens):
        return self.head(self.lstm(tokens)[0])


def matched_hidden(token_size: int, num_classes: int, num_params: int) -> int:
    """The LSTM hidden size whose parameter count is closest to num_params ("similar size")."""
    def count(h):
        return 4 * h * (token_size + h + 2) + (h + 1) * num_classes
    return min(range(8, 2049), key=lambda h: abs(count(h) - num_params))

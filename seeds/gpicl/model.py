"""GPICL: a vanilla causal Transformer as a general-purpose in-context learner (thesis sec. 5.3.2).

Each token is a projected input x_i concatenated with the one-hot label y_{i-1} of the previous
input (Fig. 5.1); the output at position i are the logits for y_i. Learned positional
embeddings, pre-LayerNorm blocks of causal multi-head self-attention and an MLP of width
4 * d_model (App. D.4). No gradient is used at meta-test time: learning happens in the
activations (the keys and values of the context are the model's state, sec. 5.4.2).

evaluate.py relies only on GPICL(**model_kwargs), load_state_dict and forward(tokens) ->
logits (B, T, classes); it feeds only prefixes, so position t never sees label y_t.
"""

import torch
from torch import nn


class GPICL(nn.Module):
    def __init__(self, token_size: int, num_classes: int, max_len: int, d_model: int, heads: int,
                 layers: int):
        super().__init__()
        self.embed = nn.Linear(token_size, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)  # learned positions
        block = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, E) -> logits (B, T, classes), position t attending to positions <= t."""
        T = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=tokens.device, dtype=tokens.dtype)
        h = self.embed(tokens) + self.pos[:T]  # (B, T, d_model)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(self.norm(h))

"""A transformer language model, as makemore.py's Transformer: the GPT-2 decoder (Radford et
al. 2019; Vaswani et al. 2017), small.

    x      = E[c_t] + P[t]                                  character and position embeddings
    x     += attn(ln_1(x))        (layers times)            causal multi-head self-attention
    x     += W_2 gelu(W_1 ln_2(x) + b_1) + b_2              an MLP 4x as wide on each position
    logits = ln_f(x) @ W_out                                (no bias, as GPT-2)

The window is read as makemore.py's sequence (base.window_layout): attention masks the columns
before a row's start as well as those after the query, and P is indexed by the position counted
from the start, so a prefix gets the same logits whatever padding precedes it. `dropout` is
nanoGPT's (on the embeddings, the attention weights and each residual branch); makemore.py has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .base import Model, ModelConfig, causal_mask, embed_window, init_normal_, seeded, sequence_output, setting
from .softmax import OutputSettings, head_field, output_head, softmax_field


@dataclass
class TransformerConfig(OutputSettings, ModelConfig):
    """GPT-2's decoder blocks over character and position embeddings (makemore.py's sizes)."""

    name = "transformer"
    block_size: int = setting(16, "characters of context: the longest word + 1 reads whole words", min=1)
    emb_dim: int = setting(64, "width of the residual stream: each character's embedding (makemore.py's n_embd)",
                           min=1)
    layers: int = setting(4, "transformer blocks (makemore.py's n_layer)", min=1)
    heads: int = setting(4, "attention heads per block (makemore.py's n_head); must divide emb-dim", min=1)
    dropout: float = setting(0.0, "dropout on the embeddings, attention weights and residual branches while training",
                             min=0, below=1)
    softmax: str = softmax_field()  # the output layer (models/softmax.py)
    softmax_head: int = head_field()

    def validate(self) -> None:
        super().validate()
        if self.emb_dim % self.heads:
            raise UserError(f"emb-dim ({self.emb_dim}) must be a multiple of heads ({self.heads})")


class CausalSelfAttention(nn.Module):
    """Multi-head attention, each position reading the positions of its sequence up to itself."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.c_attn = nn.Linear(cfg.emb_dim, 3 * cfg.emb_dim)  # queries, keys, values of all heads at once
        self.c_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, heads, T, head size)
                   for t in self.c_attn(x).split(C, dim=2))
        # softmax(q k^T / sqrt(head size)) v over the allowed keys, in one fused call
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None],
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # the heads side by side again
        return F.dropout(self.c_proj(y), self.dropout, self.training)


class Block(nn.Module):
    """GPT-2's block: pre-norm attention, then a pre-norm MLP, each added to the residual stream."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.emb_dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.emb_dim)
        self.c_fc = nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim)
        self.c_proj = nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        # GPT-2's gelu is the tanh approximation (makemore.py's NewGELU)
        h = self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x + F.dropout(h, self.dropout, self.training)


class Transformer(Model):
    """forward(idx, targets=None) -> (logits, loss) of the next character after the window."""

    Config = TransformerConfig
    sequence = True

    def __init__(self, cfg: TransformerConfig, seed: int = 42):
        super().__init__(cfg)
        with seeded(seed):
            self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
            self.wpe = nn.Embedding(cfg.block_size, cfg.emb_dim)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
            self.ln_f = nn.LayerNorm(cfg.emb_dim)
            self.lm_head = output_head(cfg, cfg.emb_dim, bias=False)
            self.label_embedding(cfg.emb_dim)
            # GPT-2's N(0, 0.02), as minGPT and makemore.py's first version (an adaptive head keeps its own)
            init_normal_(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x, window, start = embed_window(self, idx)
        x = F.dropout(x, self.cfg.dropout, self.training)
        mask = causal_mask(start, window.shape[1])
        for block in self.blocks:
            x = block(x, mask)
        return sequence_output(self, self.lm_head, x, window, targets, norm=self.ln_f)

    def embedding_table(self) -> torch.Tensor:
        return self.wte.weight


MODEL = Transformer
DEFAULT_PRESET = "transformer"
PRESETS: dict[str, dict] = {
    # makemore.py's settings (4 layers, 4 heads, n_embd 64, AdamW betas 0.9/0.99, weight decay
    # 0.01, batch 32) with a cosine schedule and a short warm-up for a short run. Not tuned: its
    # dev loss is still falling when the run ends (docs/models.md).
    "transformer": dict(block_size=16, emb_dim=64, layers=4, heads=4, batch_size=32, steps=5_000, lr=3e-3,
                        warmup=100, optimizer="adamw", schedule="cosine", weight_decay=0.01, betas=(0.9, 0.99)),
}

# `makemore tune --model transformer`: see mlp.py's SEARCH_SPACE. Widths are choices that both
# head counts divide, so that every drawn configuration is a valid one.
SEARCH_SPACE: dict = {
    "emb_dim": [32, 48, 64, 96, 128],
    "heads": [2, 4],
    "layers": (1, 6, False),
    "dropout": (0.0, 0.3, False),
    "lr": (3e-4, 1e-2, True),
    "batch_size": (32, 256, True),
    "weight_decay": (0.0, 0.2, False),
    "teacher": (0.0, 0.9, False),
}
SEARCH_FIXED = {"optimizer": "adamw", "schedule": "cosine"}

"""Text classifiers of paper Table 4 (appendix B.4): TextCNN, TextRNN and a small Transformer
encoder, each taking ``(ids, lengths)`` (token ids padded with 0, true lengths) and returning logits.

- :class:`TextCNN` (Kim 2014): embedding, parallel 1-d convolutions of widths 3, 4, 5 with 100
  filters each, ReLU, max over time, dropout 0.5, linear classifier.
- :class:`TextRNN` (Lai et al. 2015, "recurrent convolutional neural network"): a bidirectional
  LSTM gives each word a left and a right context; ``[left, word, right]`` goes through a linear
  layer and tanh (the recurrent-convolutional read-out), a max over time, dropout 0.5 and a linear
  classifier. Lai et al. use a plain bidirectional recurrence; we use an LSTM cell in it, as common
  re-implementations do.
- :class:`TextTransformer` (Vaswani et al. 2017, pre-LN encoder): embedding, a linear projection
  to ``d_model``, sinusoidal positions, ``layers`` encoder blocks of multi-head self-attention and
  a ReLU MLP, a final LayerNorm, a mean over the real tokens and a linear classifier. The blocks
  take the variants of Table 4's residual baselines:

  =============  ===========================  ==================================================
  variant        block                         where
  =============  ===========================  ==================================================
  ``pre_ln``     ``x + f(LN(x))``              Default, Orthogonal, ZerO, IDInit
  ``rezero``     ``x + a * f(LN(x))``, a = 0   ReZero's gate; LayerNorm kept, as the lab's
                                               CIFAR ReZero keeps BN
  ``skipinit``   ``x + a * f(x)``, a = 0       SkipInit: the gate replaces normalisation
  ``fixup``      ``x + s * f(x)``, s = 1       Fixup: no normalisation, a scalar multiplier;
                                               its weights come from :func:`fixup_transformer_init_`
  =============  ===========================  ==================================================

The embedding table is the model's; :func:`idinit.lab.experiments.text_train` copies GloVe into
it after initialisation (initialisation schemes keep embeddings: the paper's IDI is for weight matrices, Sec. 3.1).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import idinit

TRANSFORMER_VARIANTS = ("pre_ln", "rezero", "skipinit", "fixup")


def _padding_mask(ids: torch.Tensor) -> torch.Tensor:
    return ids == 0


class TextCNN(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int = 50, widths=(3, 4, 5),
                 filters: int = 100, dropout: float = 0.5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, w) for w in widths)
        self.min_len = max(widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(filters * len(widths), num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if ids.shape[1] < self.min_len:  # the widest filter needs that many positions
            ids = F.pad(ids, (0, self.min_len - ids.shape[1]))
        x = self.embedding(ids).transpose(1, 2)  # (N, E, L)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


class TextRNN(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int = 50, hidden: int = 100,
                 read_out: int = 100, dropout: float = 0.5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.rnn = nn.LSTM(embedding_dim, hidden, batch_first=True, bidirectional=True)
        self.read_out = nn.Linear(2 * hidden + embedding_dim, read_out)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(read_out, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embedding(ids)
        if lengths is not None:
            packed = nn.utils.rnn.pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
            context, _ = self.rnn(packed)
            context, _ = nn.utils.rnn.pad_packed_sequence(context, batch_first=True, total_length=ids.shape[1])
        else:
            context, _ = self.rnn(emb)
        hidden = self.rnn.hidden_size
        features = torch.cat([context[..., :hidden], emb, context[..., hidden:]], dim=2)
        y = torch.tanh(self.read_out(features))
        y = y.masked_fill(_padding_mask(ids)[..., None], float("-inf")).amax(dim=1)
        return self.fc(self.dropout(y))


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class EncoderBlock(nn.Module):
    """Self-attention then a ReLU MLP, each a residual branch in the form of ``variant``."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float, variant: str = "pre_ln"):
        super().__init__()
        if variant not in TRANSFORMER_VARIANTS:
            raise ValueError(f"unknown Transformer variant {variant!r}; expected one of {TRANSFORMER_VARIANTS}")
        norm = variant in ("pre_ln", "rezero")
        self.norm1 = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.linear1 = nn.Linear(d_model, ff)
        self.linear2 = nn.Linear(ff, d_model)
        self.dropout = nn.Dropout(dropout)
        if variant == "pre_ln":
            self.gate1 = self.gate2 = None
        else:  # ReZero / SkipInit start their gates at 0, Fixup its multipliers at 1
            start = 1.0 if variant == "fixup" else 0.0
            self.gate1 = nn.Parameter(torch.full((1,), start))
            self.gate2 = nn.Parameter(torch.full((1,), start))

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h = self.dropout(self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0])
        x = x + (h if self.gate1 is None else self.gate1 * h)
        h = self.dropout(self.linear2(self.dropout(F.relu(self.linear1(self.norm2(x))))))
        return x + (h if self.gate2 is None else self.gate2 * h)


class TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int = 50, d_model: int = 128,
                 heads: int = 4, ff: int = 256, layers: int = 2, dropout: float = 0.1, max_len: int = 128,
                 variant: str = "pre_ln"):
        super().__init__()
        self.variant = variant
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.proj = nn.Linear(embedding_dim, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, heads, ff, dropout, variant) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model) if variant in ("pre_ln", "rezero") else nn.Identity()
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if ids.shape[1] > self.positions.shape[0]:
            raise ValueError(f"texts of {ids.shape[1]} tokens; this model takes at most {self.positions.shape[0]}")
        padding = _padding_mask(ids)
        x = self.proj(self.embedding(ids)) + self.positions[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, padding)
        x = self.norm(x)
        keep = (~padding)[..., None].to(x.dtype)
        return self.fc((x * keep).sum(1) / keep.sum(1).clamp_min(1.0))


@torch.no_grad()
def fixup_transformer_init_(model: TextTransformer) -> TextTransformer:
    """Fixup (Zhang et al. 2019) on the normalisation-free Transformer: every layer Xavier through
    ``idinit.init_``, then inside each of the ``L`` residual branches (attention, MLP) the layers
    before the last scaled by ``L^(-1/(2m-2))`` with ``m = 2`` layers a branch, the branch's last
    layer (attention output, MLP ``linear2``) and the classifier set to 0, multipliers at 1."""
    if not isinstance(model, TextTransformer) or model.variant != "fixup":
        raise TypeError("fixup_transformer_init_ expects a TextTransformer built with variant='fixup'")
    idinit.init_(model, scheme="xavier", example_inputs=example_inputs(model.embedding.num_embeddings))
    scale = (2 * len(model.blocks)) ** -0.5
    for block in model.blocks:
        block.attn.in_proj_weight.mul_(scale)
        block.linear1.weight.mul_(scale)
        block.attn.out_proj.weight.zero_()
        block.linear2.weight.zero_()
        block.gate1.fill_(1.0)
        block.gate2.fill_(1.0)
    model.fc.weight.zero_()
    model.fc.bias.zero_()
    return model


def example_inputs(vocab_size: int, batch: int = 2, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A small batch of token ids (no padding) and lengths for tracing a text model."""
    ids = (torch.arange(batch * length).reshape(batch, length) % max(1, vocab_size - 2)) + 2
    return ids, torch.full((batch,), length, dtype=torch.int64)


TEXT_ARCHS = ("textcnn", "textrnn", "transformer")
# every library scheme but zero_gamma: no norm closes a branch of these pre-LN models, so it would be kaiming
TEXT_LIBRARY_SCHEMES = tuple(s for s in idinit.SCHEMES if s != "zero_gamma")
TEXT_VARIANT_INITS = ("fixup", "rezero", "skipinit")  # Transformer only


def build_text_model(arch: str, init: str, vocab_size: int, num_classes: int, embedding_dim: int = 50,
                     init_options: dict | None = None) -> nn.Module:
    """Build ``arch`` in the variant ``init`` needs and initialise it with ``idinit.init_``.

    Library schemes go to ``idinit.init_`` on the model as built (a pre-LN Transformer). ReZero
    and SkipInit are their Transformer variants initialised with PyTorch's defaults (``"default"``)
    and their gates at 0 (the model builds them so; schemes keep gates); Fixup is
    :func:`fixup_transformer_init_`. Seed with ``torch.manual_seed`` first.
    """
    if arch not in TEXT_ARCHS:
        raise ValueError(f"unknown text architecture {arch!r}; expected one of {TEXT_ARCHS}")
    if init not in TEXT_LIBRARY_SCHEMES + TEXT_VARIANT_INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {TEXT_LIBRARY_SCHEMES + TEXT_VARIANT_INITS}")
    if init in TEXT_VARIANT_INITS and arch != "transformer":
        raise ValueError(f"init {init!r} is a residual-network variant; only 'transformer' takes it, not {arch!r}")
    init_options = dict(init_options or {})
    if init_options and init not in TEXT_LIBRARY_SCHEMES:
        raise ValueError(f"init {init!r} takes no options, got {sorted(init_options)}")
    if arch == "textcnn":
        model = TextCNN(vocab_size, num_classes, embedding_dim)
    elif arch == "textrnn":
        model = TextRNN(vocab_size, num_classes, embedding_dim)
    else:
        variant = init if init in TEXT_VARIANT_INITS else "pre_ln"
        model = TextTransformer(vocab_size, num_classes, embedding_dim, variant=variant)
        if init == "fixup":
            return fixup_transformer_init_(model)
    scheme = "default" if init in TEXT_VARIANT_INITS else init
    idinit.init_(model, scheme=scheme, example_inputs=example_inputs(vocab_size), **init_options)
    return model


__all__ = ["TEXT_ARCHS", "TEXT_LIBRARY_SCHEMES", "TEXT_VARIANT_INITS", "build_text_model", "EncoderBlock", "TRANSFORMER_VARIANTS", "TextCNN", "TextRNN", "TextTransformer", "example_inputs",
           "fixup_transformer_init_", "sinusoidal_positions"]

"""A small Transformer language model and a WikiText-2 dataset, with the constructors and item shapes of
``lightning.pytorch.demos`` (adapted, like those, from PyTorch's word_language_model example).

`WikiText2` never downloads: it reads ``data_dir/wikitext-2.txt`` (the word-level training text, one line
per line of the corpus), and says where to put the file when it is missing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset


class Transformer(nn.Module):
    """Encoder-decoder Transformer over token ids; ``forward(inputs, target)`` gives log-probabilities of shape
    ``(batch * seq_len, vocab_size)``."""

    def __init__(
        self,
        vocab_size: int = 33278,  # WikiText-2's vocabulary
        ninp: int = 200,
        nhead: int = 2,
        nhid: int = 200,
        nlayers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.embedding = nn.Embedding(vocab_size, ninp)
        self.transformer = nn.Transformer(
            d_model=ninp,
            nhead=nhead,
            num_encoder_layers=nlayers,
            num_decoder_layers=nlayers,
            dim_feedforward=nhid,
            dropout=dropout,
            batch_first=True,
        )
        self.decoder = nn.Linear(ninp, vocab_size)
        self.ninp = ninp
        self.vocab_size = vocab_size
        self.src_mask: Tensor | None = None

    def generate_square_subsequent_mask(self, size: int) -> Tensor:
        """A mask that keeps each position from attending to later ones."""
        mask = torch.triu(torch.ones(size, size), diagonal=1)
        return mask.float().masked_fill(mask == 1, float("-inf")).masked_fill(mask == 0, 0.0)

    def forward(self, inputs: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _, t = inputs.shape
        if self.src_mask is None or self.src_mask.size(0) != t:
            self.src_mask = self.generate_square_subsequent_mask(t).to(inputs.device)
        if mask is None:
            mask = self.generate_square_subsequent_mask(t).to(inputs.device)
        src = self.pos_encoder(self.embedding(inputs) * math.sqrt(self.ninp))
        target = self.pos_encoder(self.embedding(target) * math.sqrt(self.ninp))
        output = self.decoder(self.transformer(src, target, tgt_mask=mask))
        return F.log_softmax(output, dim=-1).view(-1, self.vocab_size)


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.dim = dim
        self.max_len = max_len
        self.pe: Tensor | None = None  # built on first use, on the input's device (not a buffer: not saved)

    def forward(self, x: Tensor) -> Tensor:
        if self.pe is None:
            self.pe = self._init_pos_encoding(x.device)
        return self.dropout(x + self.pe[:, x.size(1)])

    def _init_pos_encoding(self, device: torch.device) -> Tensor:
        pe = torch.zeros(self.max_len, self.dim, device=device)
        position = torch.arange(0, self.max_len, dtype=torch.float, device=device).unsqueeze(1)
        div_term = torch.exp(
            torch.arange(0, self.dim, 2, device=device).float() * (-math.log(10000.0) / self.dim)
        )
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        return pe.unsqueeze(0)


class WikiText2(Dataset):
    """Blocks of `block_size` token ids from ``data_dir/wikitext-2.txt``; item ``i`` is ``(inputs, target)``,
    the target shifted by one token. ``download`` is accepted for compatibility and never downloads."""

    def __init__(
        self, data_dir: str | os.PathLike = Path("./data"), block_size: int = 35, download: bool = True
    ) -> None:
        super().__init__()
        self.path = Path(data_dir) / "wikitext-2.txt"
        if not self.path.is_file():
            raise FileNotFoundError(
                f"WikiText2: {str(self.path)!r} does not exist. savepoint never downloads data: put the word-level "
                f"WikiText-2 training text there (for example PyTorch examples' "
                f"word_language_model/data/wikitext-2/train.txt, renamed wikitext-2.txt), or pass "
                f"data_dir= the folder that holds it."
            )
        self.data, self.dictionary = tokenize(self.path)
        self.block_size = block_size

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)

    def __len__(self) -> int:
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block_size
        end = start + self.block_size
        return self.data[start:end], self.data[start + 1 : end + 1]


class Dictionary:
    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


def tokenize(path: str | os.PathLike) -> tuple[Tensor, Dictionary]:
    """Every word of the file (an ``<eos>`` after each line) as ids, and the dictionary built on the way."""
    dictionary = Dictionary()
    ids: list[int] = []
    with open(path, encoding="utf8") as f:
        for line in f:
            ids.extend(dictionary.add_word(word) for word in [*line.split(), "<eos>"])
    return torch.tensor(ids, dtype=torch.int64), dictionary

"""Text classification data of the lab (paper Table 4, appendix B.4): SST-2 and TREC-6 as token-id
tensors, with the GloVe 6B 50-d vectors of ``shared/data`` for the embedding table.

Everything is read as plain text or a numpy array (``allow_pickle=False``); nothing is downloaded.

- SST-2, sentence level (Kim 2014's split): ``sst2-sent-{train,dev,test}.tsv``, ``sentence<TAB>label``
  with a header; train 6,920, dev 872, test 1,821. We train on train and report test accuracy
  (dev is recorded too), as Kim (2014) does for SST-2.
- TREC-6: ``trec6-{train,test}.tsv``, ``label<TAB>coarse<TAB>fine<TAB>question`` (5,452 / 500);
  the coarse label (6 classes) is the target, as in Table 4.

The texts are already PTB-tokenised, so the tokeniser lowercases and splits on whitespace: the same
rule the GloVe subset was filtered with (its manifest), which keeps its 98.96% token coverage.
The vocabulary is the training split's tokens (the evaluation splits' unseen words map to ``<unk>``),
so the evaluation sets never leak into the model.
"""
from __future__ import annotations

import csv
import pathlib
from dataclasses import dataclass

import numpy as np
import torch

from .locate import data_root

PAD, UNK = "<pad>", "<unk>"
GLOVE_VECTORS = "glove.6B.50d.sst2-trec.f16.npy"
GLOVE_VOCAB = "glove.6B.50d.sst2-trec.vocab.txt"
# dataset -> (files per split, text column, label column, number of classes)
TEXT_DATASETS = {
    "sst2": ({"train": "sst2-sent-train.tsv", "dev": "sst2-sent-dev.tsv", "test": "sst2-sent-test.tsv"},
             "sentence", "label", 2),
    "trec6": ({"train": "trec6-train.tsv", "test": "trec6-test.tsv"}, "question", "label", 6),
}


def tokenize(text: str) -> list[str]:
    """Lowercase and split on whitespace (the files are PTB-tokenised already)."""
    return text.lower().split()


def read_tsv(path: str | pathlib.Path, text_column: str, label_column: str, num_classes: int
             ) -> tuple[list[list[str]], list[int]]:
    """Tokenised texts and integer labels of a headed TSV file; ``ValueError`` naming the file and
    line for a missing column, an empty text or a label outside ``[0, num_classes)``."""
    path = pathlib.Path(path)
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {text_column, label_column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column(s) {sorted(missing)} in the header {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            tokens = tokenize(row[text_column] or "")
            try:
                label = int(row[label_column])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: label {row[label_column]!r} is not an integer") from None
            if not tokens or not 0 <= label < num_classes:
                raise ValueError(f"{path}:{line}: empty text or label {label} outside [0, {num_classes})")
            texts.append(tokens)
            labels.append(label)
    if not texts:
        raise ValueError(f"{path}: no rows")
    return texts, labels


class Vocabulary:
    """Token <-> id; id 0 is ``<pad>``, id 1 ``<unk>``, then tokens in first-seen order."""

    def __init__(self, tokens):
        self.itos = [PAD, UNK]
        self.stoi = {PAD: 0, UNK: 1}
        for token in tokens:
            if token not in self.stoi:
                self.stoi[token] = len(self.itos)
                self.itos.append(token)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(t, 1) for t in tokens]


@dataclass
class TextSplit:
    """Token ids padded with 0 to the longest text, the true lengths and the labels."""

    ids: torch.Tensor      # (N, L) int64
    lengths: torch.Tensor  # (N,) int64
    labels: torch.Tensor   # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TextData:
    name: str
    vocab: Vocabulary
    splits: dict[str, TextSplit]
    num_classes: int


def _encode(vocab: Vocabulary, texts: list[list[str]], labels: list[int], max_len: int) -> TextSplit:
    lengths = [min(len(t), max_len) for t in texts]
    ids = torch.zeros(len(texts), max(lengths), dtype=torch.int64)
    for i, tokens in enumerate(texts):
        encoded = vocab.encode(tokens[:max_len])
        ids[i, :len(encoded)] = torch.tensor(encoded, dtype=torch.int64)
    return TextSplit(ids, torch.tensor(lengths, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64))


def load_text_dataset(name: str, data_dir=None, max_len: int = 64) -> TextData:
    """SST-2 (``"sst2"``) or TREC-6 (``"trec6"``) encoded with the training split's vocabulary;
    texts longer than ``max_len`` tokens are cut (none of SST-2's or TREC-6's is longer than 64)."""
    if name not in TEXT_DATASETS:
        raise ValueError(f"unknown text dataset {name!r}; known: {sorted(TEXT_DATASETS)}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    files, text_column, label_column, num_classes = TEXT_DATASETS[name]
    root = data_root(data_dir)
    raw = {}
    for split, file in files.items():
        if not (root / file).is_file():
            raise FileNotFoundError(f"{name}: {file} is not in the data folder {root}")
        raw[split] = read_tsv(root / file, text_column, label_column, num_classes)
    vocab = Vocabulary(token for tokens in raw["train"][0] for token in tokens)
    splits = {split: _encode(vocab, texts, labels, max_len) for split, (texts, labels) in raw.items()}
    return TextData(name, vocab, splits, num_classes)


def load_glove(data_dir=None) -> tuple[list[str], np.ndarray]:
    """The GloVe 6B 50-d subset: its words and a float32 ``(V, 50)`` array (row i = word i)."""
    root = data_root(data_dir)
    words = (root / GLOVE_VOCAB).read_text(encoding="utf-8").split("\n")
    if words and words[-1] == "":
        words.pop()
    vectors = np.load(root / GLOVE_VECTORS, allow_pickle=False)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"GloVe: {GLOVE_VECTORS} has shape {vectors.shape}, {GLOVE_VOCAB} {len(words)} words")
    return words, vectors.astype(np.float32)


def glove_matrix(vocab: Vocabulary, words: list[str], vectors: np.ndarray, generator: torch.Generator
                 ) -> tuple[torch.Tensor, float]:
    """An embedding table for ``vocab``: GloVe rows where the word has one; the other words (and
    ``<unk>``) drawn from a normal with GloVe's per-dimension mean and std, ``<pad>`` zero (Kim
    2014 draws unknown words at the variance of the pre-trained ones). Returns the table and the
    fraction of the vocabulary found in GloVe."""
    index = {w: i for i, w in enumerate(words)}
    mean = torch.from_numpy(vectors.mean(0))
    std = torch.from_numpy(vectors.std(0))
    table = mean + std * torch.randn(len(vocab), vectors.shape[1], generator=generator)
    found = 0
    for i, word in enumerate(vocab.itos):
        if word in index:
            table[i] = torch.from_numpy(vectors[index[word]])
            found += 1
    table[0] = 0.0
    return table, found / len(vocab)


__all__ = ["PAD", "TEXT_DATASETS", "TextData", "TextSplit", "UNK", "Vocabulary", "glove_matrix", "load_glove",
           "load_text_dataset", "read_tsv", "tokenize"]

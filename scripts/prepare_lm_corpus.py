"""Prepare the token file of the scaled-down language-model pretraining (paper Sec. 4.6, appendix B.6).

Corpus: the reStructuredText sources of the Python 3.11 documentation, as Debian ships them in the
``python3.11-doc`` package (``usr/share/doc/python3.11/html/_sources/**/*.rst.txt``, 497 files,
about 11 MB of English prose and code examples). Licence: the documentation is (c) the Python
Software Foundation under the PSF License Agreement (permissive; code examples in it under the
Zero-Clause BSD licence), see ``usr/share/doc/python3.11-doc/copyright`` in the package.

Tokenizer: a byte-level BPE (GPT-2's scheme, 8,192 tokens) trained here on the corpus with the
``tokenizers`` library (no pretrained tokenizer files exist offline); special tokens ``<pad>``,
``<mask>`` (for the masked LM) and ``<eos>`` (between files).

    apt-get download python3.11-doc           # once, anywhere: a 12.6 MB .deb
    python scripts/prepare_lm_corpus.py python3.11-doc_*.deb --out .data/lm

writes ``tokens.u16.npy`` (uint16, files in sorted path order, ``<eos>`` after each),
``tokenizer.json`` and ``manifest.json`` (sizes, sha256, source, licence) into ``--out``. Only the
package's plain-text members are read (as bytes, decoded as UTF-8); nothing in it is executed.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pathlib
import subprocess
import sys
import tarfile

import numpy as np

SOURCES = "./usr/share/doc/python3.11/html/_sources/"
SPECIAL = ["<pad>", "<mask>", "<eos>"]


def read_corpus(deb: pathlib.Path) -> list[tuple[str, str]]:
    """``(path, text)`` of every ``*.rst.txt`` member under the documentation sources, sorted."""
    if not deb.is_file():
        raise FileNotFoundError(f"{deb} does not exist (run `apt-get download python3.11-doc` first)")
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    texts = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
        for member in archive.getmembers():
            name = member.name if member.name.startswith("./") else "./" + member.name
            if member.isfile() and name.startswith(SOURCES) and name.endswith(".rst.txt"):
                texts.append((name[len(SOURCES):], archive.extractfile(member).read().decode("utf-8")))
    if not texts:
        raise ValueError(f"{deb}: no {SOURCES}*.rst.txt members; is it python3.11-doc?")
    return sorted(texts)


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deb", type=pathlib.Path, help="the python3.11-doc .deb")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(".data/lm"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args(argv)
    if not 256 + len(SPECIAL) < args.vocab_size <= 65535:
        raise SystemExit(f"--vocab-size must be in ({256 + len(SPECIAL)}, 65535] to fit uint16, got {args.vocab_size}")
    corpus = read_corpus(args.deb)
    texts = [text for _, text in corpus]
    tokenizer = train_tokenizer(texts, args.vocab_size)
    eos = tokenizer.token_to_id("<eos>")
    ids = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        ids.append(eos)
    tokens = np.asarray(ids, dtype=np.uint16)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "tokens.u16.npy", tokens, allow_pickle=False)
    tokenizer.save(str(args.out / "tokenizer.json"))
    manifest = {
        "corpus": "Python 3.11 documentation sources (reStructuredText), Debian package python3.11-doc",
        "package_file": args.deb.name, "package_sha256": hashlib.sha256(args.deb.read_bytes()).hexdigest(),
        "licence": "PSF License Agreement (documentation); Zero-Clause BSD for code examples; see the package's "
                   "usr/share/doc/python3.11-doc/copyright",
        "files": len(corpus), "characters": sum(len(t) for t in texts),
        "tokenizer": f"byte-level BPE, {tokenizer.get_vocab_size()} tokens, trained on this corpus (tokenizers "
                     f"library); special tokens {SPECIAL}",
        "vocab_size": tokenizer.get_vocab_size(), "special_ids": {s: tokenizer.token_to_id(s) for s in SPECIAL},
        "tokens": int(tokens.size),
        "tokens_sha256": hashlib.sha256((args.out / "tokens.u16.npy").read_bytes()).hexdigest(),
        "tokens_bytes": (args.out / "tokens.u16.npy").stat().st_size,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

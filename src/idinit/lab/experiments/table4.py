"""Paper Table 4 (appendix B.4): text classification on SST-2 and TREC-6 with TextCNN, TextRNN and a
Transformer; Default, Orthogonal, ZerO and IDInit on all three, Fixup, ReZero and SkipInit on the
Transformer; 10 epochs, 5 seeds; AdaDelta lr 1.0 (TextCNN, TextRNN), Adam lr 1e-4 (Transformer).

The paper's embeddings are GloVe ("G") and Word2Vec ("W") at sizes not stated and not available here;
we run GloVe 6B 50-d (the only GloVe in ``shared/data``) and, instead of Word2Vec, randomly
initialised embeddings, both trained with the model. Beside our GloVe rows stands the paper's G
number, beside our random rows its W number, for reference only: neither is the same setting.
"""
from __future__ import annotations

from .grid import Experiment
from .task_grid import TaskExperiment
from .text_classification import TextRunConfig

ARCH_INITS = {"textcnn": ("default", "orthogonal", "zero", "idinit"),
              "textrnn": ("default", "orthogonal", "zero", "idinit"),
              "transformer": ("default", "orthogonal", "zero", "idinit", "fixup", "rezero", "skipinit")}
OPTIMIZERS = {"textcnn": dict(optimizer="adadelta", lr=1.0), "textrnn": dict(optimizer="adadelta", lr=1.0),
              "transformer": dict(optimizer="adam", lr=1e-4)}
LABELS = {"default": "Default", "orthogonal": "Orthogonal", "zero": "ZerO", "idinit": "IDInit", "fixup": "Fixup",
          "rezero": "ReZero", "skipinit": "SkipInit"}

# Paper Table 4 (appendix B.4 version, which adds ReZero and SkipInit): (GloVe, Word2Vec) per cell.
_PAPER = {
    "sst2": {
        "textcnn": {"default": ("81.40±0.66", "84.56±0.43"), "orthogonal": ("82.24±0.44", "84.37±0.38"),
                    "zero": ("82.05±0.67", "84.26±0.39"), "idinit": ("82.60±0.24", "85.67±0.41")},
        "textrnn": {"default": ("81.69±0.30", "84.29±0.70"), "orthogonal": ("81.86±0.55", "84.61±0.78"),
                    "zero": ("82.03±0.41", "84.80±0.64"), "idinit": ("82.66±0.16", "85.49±0.33")},
        "transformer": {"default": ("80.97±1.20", "83.36±0.76"), "orthogonal": ("82.22±0.87", "83.99±0.23"),
                        "fixup": ("78.72±0.78", "81.25±0.27"), "rezero": ("81.67±0.77", "82.32±0.51"),
                        "skipinit": ("82.30±0.47", "84.12±0.75"), "zero": ("82.28±0.81", "82.72±0.55"),
                        "idinit": ("82.48±0.55", "84.51±0.24")}},
    "trec6": {
        "textcnn": {"default": ("90.80±0.94", "92.06±1.00"), "orthogonal": ("90.34±0.72", "92.72±0.84"),
                    "zero": ("90.89±0.41", "92.90±0.50"), "idinit": ("91.22±0.54", "92.94±0.48")},
        "textrnn": {"default": ("86.34±1.04", "90.52±1.54"), "orthogonal": ("85.86±0.90", "89.88±1.54"),
                    "zero": ("87.24±0.64", "88.71±0.40"), "idinit": ("87.04±0.26", "90.60±0.58")},
        "transformer": {"default": ("86.68±2.68", "89.20±1.20"), "orthogonal": ("86.90±1.51", "89.26±0.86"),
                        "fixup": ("86.95±0.35", "89.35±0.53"), "rezero": ("86.92±0.98", "89.36±0.52"),
                        "skipinit": ("83.59±0.61", "87.10±0.41"), "zero": ("86.97±0.75", "89.38±0.64"),
                        "idinit": ("87.32±0.78", "90.06±0.60")}},
}
# Accuracy counted as "reached" for epochs-to-target (ours; the paper reports none): a few points
# under the paper's SST-2 results, one value for both datasets so the report has one column.
TARGET = 0.75


# Slowest first (per step on a GPU, where these models are bound by kernel launches: the Transformer
# launches the most kernels, TextCNN the fewest), so the workers finish together.
_SLOWEST_FIRST = {"transformer": 0, "textrnn": 1, "textcnn": 2}


def run_order(run) -> tuple:
    """Seed by seed, so that a grid cut short by its deadline has every cell with fewer seeds rather
    than some cells with all and others with none; within a seed the slowest runs first."""
    return run.seed, _SLOWEST_FIRST[run.arch]


def config_name(dataset: str, embedding: str, arch: str, init: str) -> str:
    return f"{dataset}-{embedding}-{arch}-{init}"


_ARCH_LABELS = {"textcnn": "TextCNN", "textrnn": "TextRNN", "transformer": "Transformer"}
_DATASET_LABELS = {"sst2": "SST-2", "trec6": "TREC-6"}
_INIT_ORDER = ("default", "orthogonal", "fixup", "rezero", "skipinit", "zero", "idinit")  # the paper's rows


def table4_sections(rows: list[dict]) -> list[str]:
    """Markdown in the layout of the paper's Table 4: per dataset and embedding, initialisations down,
    architectures across, our mean ± std over finished seeds beside the paper's number (its G column
    beside our GloVe runs, its W column beside our random-embedding runs). The best of our means in
    each column is bold; "not run" marks a cell of the grid with no finished seed."""
    by_cell = {(r["config"]["dataset"], r["config"]["embedding"], r["config"]["arch"], r["config"]["init"]): r
               for r in rows if r["config"].get("task") == "text"}
    lines = ["## Table 4 layout", "",
             "Test accuracy (%) after the last epoch, mean ± sample std over finished seeds (how many, if not "
             "5, in brackets); \"paper\" is Table 4 of the paper (appendix B.4 version). Bold: our best in the "
             "column.", ""]
    for dataset in ("sst2", "trec6"):
        for embedding, column in (("glove", "G"), ("random", "W")):
            ours_label = "GloVe 6B 50-d" if embedding == "glove" else "random embeddings"
            lines += [f"### {_DATASET_LABELS[dataset]}, ours: {ours_label}; paper: {column}"
                      + ("" if embedding == "glove" else " (Word2Vec: another setting, for reference)"), "",
                      "| init | " + " | ".join(f"{_ARCH_LABELS[a]} (ours) | paper" for a in ARCH_INITS) + " |",
                      "|---|" + "---|---|" * len(ARCH_INITS)]
            best = {}
            for arch in ARCH_INITS:
                means = [by_cell[key]["acc"][0] for init in ARCH_INITS[arch]
                         if (key := (dataset, embedding, arch, init)) in by_cell and by_cell[key]["acc"][0] is not None]
                best[arch] = max(means) if means else None
            for init in _INIT_ORDER:
                cells = []
                for arch, inits in ARCH_INITS.items():
                    if init not in inits:
                        cells += ["—", "—"]
                        continue
                    row = by_cell.get((dataset, embedding, arch, init))
                    mean, std = row["acc"] if row else (None, None)
                    if mean is None:
                        ours = "not run"
                    else:
                        ours = f"{mean * 100:.2f}" + ("" if std is None else f"±{std * 100:.2f}")
                        ours = f"**{ours}**" if mean == best[arch] else ours
                        ours += "" if row["seeds_done"] == 5 else f" ({row['seeds_done']})"
                    glove, word2vec = _PAPER[dataset][arch][init]
                    cells += [ours, glove if embedding == "glove" else word2vec]
                lines.append(f"| {LABELS[init]} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def table4() -> Experiment:
    configs, paper = [], {}
    for dataset in ("sst2", "trec6"):
        for embedding in ("glove", "random"):
            for arch, inits in ARCH_INITS.items():
                for init in inits:
                    name = config_name(dataset, embedding, arch, init)
                    configs.append(TextRunConfig(name=name, arch=arch, init=init, dataset=dataset, embedding=embedding,
                                                 epochs=10, batch_size=50, target_accuracy=TARGET,
                                                 **OPTIMIZERS[arch]))
                    glove, word2vec = _PAPER[dataset][arch][init]
                    column = "G" if embedding == "glove" else "W (Word2Vec; ours: random)"
                    paper[name] = {"acc": glove if embedding == "glove" else word2vec, "epochs_to_target": "",
                                   "source": f"Table 4, {dataset}, {arch}, {LABELS[init]}, {column}"}
    return TaskExperiment(
        name="table4", version=1,
        description="Paper Table 4: TextCNN / TextRNN / Transformer on SST-2 (sentence level) and TREC-6, "
                    "GloVe 6B 50-d and random embeddings, 10 epochs, AdaDelta 1.0 / Adam 1e-4",
        configs=configs, seeds=(0, 1, 2, 3, 4), paper=paper, run_order=run_order, report_sections=table4_sections,
        notes=["Embeddings: GloVe 6B 50-d (the paper's GloVe size is not stated; only 50-d exists here) and randomly "
               "initialised ones instead of the paper's Word2Vec column; both fine-tuned. The paper's W number "
               "stands beside our random rows for reference only.",
               "Accuracy: SST-2 sentence-level test set (1,821) after the last epoch, TREC-6 test set (500); no early "
               "stopping, no dev-set selection (SST-2 dev accuracy is in the records as dev_acc).",
               "TextCNN: widths 3/4/5 x 100 filters, dropout 0.5 (Kim 2014). TextRNN: bidirectional LSTM (100 per "
               "direction) with Lai et al.'s recurrent-convolutional read-out (linear 100 + tanh, max over time). "
               "Transformer: 50-d embedding -> linear to 128, sinusoidal positions, 2 pre-LN blocks (4 heads, MLP "
               "256, dropout 0.1), mean over tokens. Batch 50, no schedule, no weight decay (none stated).",
               "Fixup, ReZero, SkipInit are Transformer variants (idinit.lab.models.text): Fixup = no LayerNorm, Xavier "
               "scaled by L^-1/2 and zero branch ends; ReZero = gates at 0 with LayerNorm kept; SkipInit = gates at 0, "
               "no LayerNorm; ReZero/SkipInit weights PyTorch defaults.",
               f"Epochs to target counts the first epoch reaching {TARGET:.0%} test accuracy; our choice, the "
               "paper reports none."])


__all__ = ["ARCH_INITS", "config_name", "run_order", "table4", "table4_sections"]

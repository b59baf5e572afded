"""Table 4's text classification: the readers, the three models and their residual variants under
``idinit.init_``, and text runs written in the lab's run-folder format through ``idinit run``."""
import json

import numpy as np
import pytest
import torch

from idinit.lab.data.text import (TextData, Vocabulary, glove_matrix, load_glove, load_text_dataset, read_tsv,
                                  tokenize)
from idinit.lab.experiments import get_experiment
from idinit.lab.experiments.runner import run_configs
from idinit.lab.experiments.text_classification import TextRunConfig, train_text_run
from idinit.lab.models.text import (EncoderBlock, TextTransformer, build_text_model, example_inputs)
from idinit.lab.experiments.runner import write_experiment_file
from idinit.lab.report import load_runs, summary_rows, write_report
from idinit.lab.train import read_records


# -- data ---------------------------------------------------------------------------------------

def test_read_tsv_names_the_bad_line(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("sentence\tlabel\nA Fine  film .\t1\nbad\t0\n")
    texts, labels = read_tsv(good, "sentence", "label", 2)
    assert texts == [["a", "fine", "film", "."], ["bad"]] and labels == [1, 0]
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nok\t1\nworse\t2\n")
    with pytest.raises(ValueError, match=r"bad.tsv:3: .*label 2 outside \[0, 2\)"):
        read_tsv(bad, "sentence", "label", 2)
    with pytest.raises(ValueError, match="no column"):
        read_tsv(good, "question", "label", 2)


def test_vocabulary_pads_with_0_and_maps_unseen_words_to_unk():
    vocab = Vocabulary(["b", "a", "b"])
    assert vocab.itos == ["<pad>", "<unk>", "b", "a"]
    assert vocab.encode(["a", "zzz", "b"]) == [3, 1, 2]


def test_real_sst2_and_trec6_splits_and_train_only_vocabulary():
    sst2 = load_text_dataset("sst2")
    assert {k: len(v) for k, v in sst2.splits.items()} == {"train": 6920, "dev": 872, "test": 1821}
    assert sst2.num_classes == 2 and set(sst2.splits["test"].labels.tolist()) == {0, 1}
    trec = load_text_dataset("trec6")
    assert {k: len(v) for k, v in trec.splits.items()} == {"train": 5452, "test": 500}
    assert torch.bincount(trec.splits["train"].labels).tolist() == [86, 1162, 1250, 1223, 835, 896]
    # the vocabulary is the training split's: some test words are unknown, no training word is
    train = trec.splits["train"]
    assert (train.ids[:, 0] > 1).all() and not (train.ids == 1).any()
    assert (trec.splits["test"].ids == 1).any()
    # padding: position >= length is 0, position < length is a token
    positions = torch.arange(train.ids.shape[1])[None]
    assert ((train.ids == 0) == (positions >= train.lengths[:, None])).all()
    with pytest.raises(ValueError, match="unknown text dataset"):
        load_text_dataset("sst5")


def test_glove_rows_are_copied_and_missing_words_drawn():
    words, vectors = load_glove()
    assert vectors.shape == (len(words), 50) and vectors.dtype == np.float32
    vocab = Vocabulary([words[5], "qqqnotaword", words[100]])
    table, coverage = glove_matrix(vocab, words, vectors, torch.Generator().manual_seed(0))
    assert torch.equal(table[2], torch.from_numpy(vectors[5])) and torch.equal(table[4], torch.from_numpy(vectors[100]))
    assert torch.equal(table[0], torch.zeros(50)) and coverage == 2 / 5
    assert 0 < table[3].abs().max() < 10  # drawn at GloVe's scale, not left 0
    again, _ = glove_matrix(vocab, words, vectors, torch.Generator().manual_seed(0))
    assert torch.equal(table, again)


# -- models under idinit.init_ ----------------------------------------------------------------------

ALL = [("textcnn", i) for i in ("default", "orthogonal", "zero", "idinit")] + \
      [("textrnn", i) for i in ("default", "orthogonal", "zero", "idinit")] + \
      [("transformer", i) for i in ("default", "orthogonal", "zero", "idinit", "fixup", "rezero", "skipinit")]


@pytest.mark.parametrize("arch,init", ALL)
def test_every_table4_model_builds_initialises_and_runs(arch, init):
    torch.manual_seed(0)
    model = build_text_model(arch, init, vocab_size=50, num_classes=6)
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    logits = model(ids, torch.tensor([4, 6]))
    assert logits.shape == (2, 6) and torch.isfinite(logits).all()


def _block_relative_change(model, ids):
    """Per encoder block, |block(x) - x| / |x| on ``ids``, measured with forward hooks."""
    ratios = []

    def hook(module, args, output):
        ratios.append(float((output - args[0]).norm() / args[0].norm()))

    handles = [b.register_forward_hook(hook) for b in model.modules() if isinstance(b, EncoderBlock)]
    model.eval()
    with torch.no_grad():
        model(ids, torch.full((ids.shape[0],), ids.shape[1]))
    for h in handles:
        h.remove()
    return ratios


@pytest.mark.parametrize("init", ["idinit", "zero", "fixup", "rezero", "skipinit"])
def test_transformer_blocks_start_as_identity_where_the_init_says_so(init):
    torch.manual_seed(0)
    model = build_text_model("transformer", init, vocab_size=60, num_classes=2)
    ratios = _block_relative_change(model, example_inputs(60, batch=3, length=10)[0])
    assert len(ratios) == 2
    # IDIZ leaves eps-sized branches (paper A.5); ZerO, Fixup and the gates exact zeros
    limit = 1e-3 if init == "idinit" else 0.0
    assert max(ratios) <= limit, ratios
    # the fault this guards against: the default init's branches are of the skip's order
    torch.manual_seed(0)
    default = _block_relative_change(build_text_model("transformer", "default", 60, 2), example_inputs(60, 3, 10)[0])
    assert min(default) > 0.05


def test_fixup_zeroes_the_classifier_and_scales_the_branch_inputs():
    torch.manual_seed(0)
    fixup = build_text_model("transformer", "fixup", 40, 3)
    torch.manual_seed(0)
    xavier = TextTransformer(40, 3, variant="fixup")
    import idinit
    idinit.init_(xavier, "xavier", example_inputs=example_inputs(40))
    assert torch.equal(fixup.fc.weight, torch.zeros(3, 128))
    assert all(not hasattr(b.norm1, "weight") for b in fixup.blocks)  # no LayerNorm
    ratio = fixup.blocks[0].linear1.weight.detach().std() / xavier.blocks[0].linear1.weight.detach().std()
    assert abs(float(ratio) - 4 ** -0.5) < 0.02  # L = 4 branches, L^(-1/2)


def test_variant_inits_are_refused_on_non_residual_models():
    with pytest.raises(ValueError, match="only 'transformer'"):
        build_text_model("textcnn", "rezero", 10, 2)
    with pytest.raises(ValueError, match="unknown init"):
        build_text_model("textrnn", "lsuv", 10, 2)


# -- runs -------------------------------------------------------------------------------------------

def fake_text(n_train=160, n_test=80, seed=0):
    """A learnable two-class task: the class decides which of two marker words the text holds."""
    rng = np.random.default_rng(seed)
    vocab = Vocabulary([f"w{i}" for i in range(30)])

    def make(n):
        from idinit.lab.data.text import TextSplit
        labels = rng.integers(0, 2, n)
        lengths = rng.integers(5, 12, n)
        ids = torch.zeros(n, 12, dtype=torch.int64)
        for i in range(n):
            ids[i, :lengths[i]] = torch.from_numpy(rng.integers(4, 32, lengths[i]))
            ids[i, rng.integers(0, lengths[i])] = 2 + labels[i]  # the marker
        return TextSplit(ids, torch.from_numpy(lengths), torch.from_numpy(labels))

    text = TextData("fake", vocab, {"train": make(n_train), "test": make(n_test)}, 2)
    words = [f"w{i}" for i in range(0, 30, 2)]
    vectors = rng.normal(0, 0.4, (len(words), 50)).astype(np.float32)
    return {"text": text, "glove": (words, vectors)}


def test_text_run_learns_writes_the_run_folder_and_skips_when_finished(tmp_path):
    config = TextRunConfig(name="cnn", arch="textcnn", init="idinit", dataset="trec6", epochs=3, batch_size=20)
    data = fake_text()
    summary = train_text_run(config, tmp_path / "cnn/seed0", data=data, log=lambda m: None)
    records = read_records(tmp_path / "cnn/seed0/records.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3] and summary["finished"]
    assert records[-1]["train_loss"] < records[0]["train_loss"] and summary["final_eval_acc"] >= 0.9
    assert json.loads((tmp_path / "cnn/seed0/config.json").read_text())["task"] == "text"
    # finished: a second call trains nothing
    mtime = (tmp_path / "cnn/seed0/records.jsonl").stat().st_mtime_ns
    again = train_text_run(config, tmp_path / "cnn/seed0", data=data)
    assert again == summary and (tmp_path / "cnn/seed0/records.jsonl").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="differs in lr: 1.0 there, 0.5 here"):
        train_text_run(config.replace(lr=0.5), tmp_path / "cnn/seed0", data=data)
    rows = summary_rows(*load_runs(tmp_path))
    assert rows[0]["name"] == "cnn" and rows[0]["acc"][0] == summary["final_eval_acc"]
    # text runs train in float32: asking for bf16 autocast is refused before anything is written
    with pytest.raises(ValueError, match="float32"):
        train_text_run(config, tmp_path / "amp/seed0", data=data, amp=True)
    assert not (tmp_path / "amp").exists()


def test_embedding_table_depends_on_the_seed_only():
    from idinit.lab.experiments.text_classification import _embedding_table
    data = fake_text()
    a, coverage = _embedding_table(TextRunConfig(init="default"), data, 50)
    b, _ = _embedding_table(TextRunConfig(init="idinit", arch="transformer"), data, 50)
    c, _ = _embedding_table(TextRunConfig(init="idinit", seed=1), data, 50)
    assert torch.equal(a, b) and not torch.equal(a, c) and coverage == 15 / 32
    words, vectors = data["glove"]
    assert torch.equal(a[data["text"].vocab.stoi["w4"]], torch.from_numpy(vectors[2]))
    r, none = _embedding_table(TextRunConfig(embedding="random"), data, 50)
    assert none == 0 and not torch.equal(r[data["text"].vocab.stoi["w4"]], a[data["text"].vocab.stoi["w4"]])


def test_table4_grid_runs_through_the_lab_runner(tmp_path, monkeypatch):
    experiment = get_experiment("table4")
    assert len(experiment.configs) == 60 and experiment.seeds == (0, 1, 2, 3, 4)
    runs = experiment.runs(seeds=[0], only=["trec6-random-textcnn-zero", "trec6-random-transformer-rezero"],
                           overrides=["epochs=1", "batch_size=40"])
    # seed by seed, the slowest (Transformer) first: a grid cut short keeps every cell (table4.run_order)
    assert [r.run_id for r in runs] == ["trec6-random-transformer-rezero/seed0", "trec6-random-textcnn-zero/seed0"]
    assert runs[0].optimizer == "adam" and runs[0].lr == 1e-4 and runs[1].optimizer == "adadelta"
    assert [r.seed for r in experiment.runs()] == sorted(experiment.seeds * 60)
    with pytest.raises(ValueError, match="unknown setting 'epoch'"):
        experiment.runs(overrides=["epoch=1"])
    monkeypatch.setattr(TextRunConfig, "load_data", lambda self, data_dir=None: fake_text())
    run_configs(runs, tmp_path, device="cpu", log=lambda m: None)
    for run in runs:
        assert json.loads((tmp_path / run.run_id / "summary.json").read_text())["finished"]
    # `idinit report`: the paper's Table 4 layout, our runs beside its numbers, "not run" elsewhere
    write_experiment_file(tmp_path, experiment, runs, "cpu", "test")
    report = write_report(tmp_path).read_text()
    trec_random = report.split("### TREC-6, ours: random embeddings")[1].split("###")[0]
    ours = summary_rows(*load_runs(tmp_path))
    zero = next(r for r in ours if r["name"] == "trec6-random-textcnn-zero")["acc"][0]
    assert f"| ZerO | **{zero * 100:.2f}** (1) | 92.90±0.50 | not run | 88.71±0.40 | not run | 89.38±0.64 |" in trec_random
    assert "| Fixup | — | — | — | — | not run | 89.35±0.53 |" in trec_random
    assert "| IDInit | not run | 92.94±0.48 |" in trec_random
    assert report.count("| IDInit | not run | 82.60±0.24 |") == 1  # SST-2 GloVe: the paper's G column

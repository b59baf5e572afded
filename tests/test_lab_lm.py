"""Language-model pretraining scaled down (Sec. 4.6): masking, batches, FLOPs, a few CPU steps of
each model under each init through the lab runner, the report's FLOPs-to-loss, the corpus script's
tokenizer."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from idinit.lab.experiments import get_experiment  # noqa: E402
from idinit.lab.experiments.lm_pretrain import (SPECIAL, LMRunConfig, _make_batch, _mask, _reach,  # noqa: E402
                                                build_lm, flops_per_token, write_lm_report)
from idinit.lab.experiments.runner import run_configs  # noqa: E402
from idinit.lab.train import read_records  # noqa: E402
from lab_fixtures import load_script  # noqa: E402

TINY = dict(layers=2, width=32, heads=2, ff=64, seq_len=16, batch_size=8, eval_every=10, eval_batches=2)


def test_bert_masking_proportions():
    ids = torch.randint(3, 500, (200, 100), generator=torch.Generator().manual_seed(0))
    inputs, labels = _mask(ids, LMRunConfig(model="bert"), 500, torch.Generator().manual_seed(1))
    picked = labels != -100
    assert abs(picked.float().mean().item() - 0.15) < 0.01           # 20,000 positions: std 0.0025
    assert torch.equal(labels[picked], ids[picked])
    masked = (inputs == SPECIAL["mask"])
    assert not (masked & ~picked).any()
    assert abs(masked[picked].float().mean().item() - 0.8) < 0.03
    kept = (inputs == ids) & picked
    assert 0.05 < kept[picked].float().mean().item() < 0.16          # 10% kept (+ random draws equal to it)
    assert torch.equal(inputs[~picked], ids[~picked])


def test_batches_depend_on_the_seed_only():
    tokens = torch.arange(1000, dtype=torch.int32) % 97 + 3
    config = LMRunConfig(model="bert", **TINY)
    a = _make_batch(tokens, torch.tensor([0, 5, 9]), config, 100, torch.Generator().manual_seed(3))
    b = _make_batch(tokens, torch.tensor([0, 5, 9]), config.replace(init="default"), 100,
                    torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    gpt = _make_batch(tokens, torch.tensor([5]), config.replace(model="gpt2"), 100, None)
    assert torch.equal(gpt[0][0], tokens[5:21].long()) and gpt[0] is gpt[1]


def test_flops_count_every_matrix_once():
    config = LMRunConfig(model="gpt2", **TINY)
    model = build_lm(config, vocab_size=100)
    d, ff, layers, vocab = 32, 64, 2, 100
    matrices = layers * (3 * d * d + d * d + 2 * d * ff) + vocab * d  # attention, MLP, tied LM head
    assert flops_per_token(model, config) == 6 * matrices + 6 * layers * 16 * d
    bert = LMRunConfig(model="bert", **TINY)
    # BERT adds the MLM transform (d x d) before its tied decoder
    assert flops_per_token(build_lm(bert, 100), bert) == 6 * (matrices + d * d) + 6 * layers * 16 * d


def test_reach_interpolates_between_evaluations():
    records = [{"val_loss": 5.0, "flops": 0.0}, {"val_loss": 4.0, "flops": 10.0}, {"val_loss": 2.0, "flops": 20.0}]
    assert _reach(records, 3.0) == 15.0 and _reach(records, 4.0) == 10.0 and _reach(records, 1.0) is None


def test_lm_runs_learn_through_the_runner_and_report(tmp_path):
    # a periodic token stream: learnable in a few dozen steps
    tokens = (np.arange(6000) % 23 + 3).astype(np.uint16)
    path = tmp_path / "tokens.u16.npy"
    np.save(path, tokens)
    experiment = get_experiment("lm-pretrain")
    assert sorted(c.name for c in experiment.configs) == ["bert-default", "bert-idinit", "gpt2-default", "gpt2-idinit"]
    runs = experiment.runs(only=["gpt2-*"], overrides=[f"tokens_path={path}", "steps=30", "lr=0.003"] +
                           [f"{k}={v}" for k, v in TINY.items()])
    run_configs(runs, tmp_path / "runs", device="cpu", log=lambda m: None)
    for run in runs:
        records = read_records(tmp_path / "runs" / run.run_id / "records.jsonl")
        assert [r["step"] for r in records] == [0, 10, 20, 30]
        assert records[-1]["val_loss"] < records[0]["val_loss"] - 1.0, records
        assert records[-1]["tokens"] == 30 * 8 * 16
    from idinit.lab.report import write_report

    report = write_report(tmp_path / "runs", tmp_path / "report").read_text()  # `idinit report` on LM runs
    assert "| gpt2 | default | 0 | True | 30 |" in report and "1.000x" in report
    assert "| paper: BERT-Base" in report and "0.887x (11.3% less)" in report
    assert (tmp_path / "report" / "loss.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="unknown setting 'step'"):
        experiment.runs(overrides=["step=1"])


def test_lm_runs_take_the_runner_s_amp(tmp_path):
    """``run_configs(amp=True)`` reaches an LM run: bf16 autocast on the CPU, where it is off by default."""
    path = tmp_path / "tokens.u16.npy"
    np.save(path, (np.arange(2000) % 23 + 3).astype(np.uint16))
    runs = get_experiment("lm-pretrain").runs(only=["gpt2-idinit"], overrides=[f"tokens_path={path}", "steps=10"] +
                                              [f"{k}={v}" for k, v in TINY.items()])
    for amp, folder in ((True, tmp_path / "bf16"), (None, tmp_path / "default")):
        run_configs(runs, folder, device="cpu", amp=amp, log=lambda m: None)
        assert json.loads((folder / runs[0].run_id / "summary.json").read_text())["amp_bf16"] is bool(amp)


def test_missing_token_file_is_named(tmp_path):
    config = LMRunConfig(tokens_path=str(tmp_path / "none.npy"), **TINY)
    with pytest.raises(FileNotFoundError, match="prepare_lm_corpus"):
        config.train(tmp_path / "run", device="cpu")


def test_corpus_tokenizer_round_trips_text():
    module = load_script("prepare_lm_corpus")
    texts = ["The quick brown fox jumps over the lazy dog.\n", "def f(x):\n    return x ** 2  # café\n"] * 20
    tokenizer = module.train_tokenizer(texts, vocab_size=300)
    assert [tokenizer.token_to_id(s) for s in module.SPECIAL] == [SPECIAL["pad"], SPECIAL["mask"], SPECIAL["eos"]]
    for text in texts[:2]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert json.loads(tokenizer.to_str())["model"]["type"] == "BPE"

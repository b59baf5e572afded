"""Text and language-model runs go through the one run-folder code path of the CIFAR runs (issue 13
§2): they resume bitwise from a checkpoint, refuse a damaged or foreign checkpoint, and have one
writer. Each test plants the fault it guards against."""
import numpy as np
import pytest
import torch

from idinit.lab.experiments.text_classification import TextRunConfig, train_text_run
from idinit.lab.train import RunFolder, read_records
from idinit.lab.train import records as rec
from test_lab_text import fake_text

QUIET = dict(log=lambda m: None)
LM_TINY = dict(layers=1, width=16, heads=2, ff=32, seq_len=8, batch_size=4, eval_every=3, eval_batches=1, steps=9)


def _text_config(**changes):
    # the transformer has dropout: a resume that lost the global RNG state would differ
    values = dict(name="t", arch="transformer", init="idinit", dataset="trec6", epochs=3, batch_size=40,
                  optimizer="adam", lr=1e-3)
    return TextRunConfig(**{**values, **changes})


def _lm_setup(tmp_path):
    pytest.importorskip("transformers")
    from idinit.lab.experiments.lm_pretrain import LMRunConfig, train_lm_run
    tokens = (np.arange(3000) % 23 + 3).astype(np.uint16)
    config = LMRunConfig(name="g", model="bert", init="idinit", lr=3e-3, tokens_path=str(tmp_path / "none.npy"),
                         **LM_TINY)
    return config, lambda folder, **kw: train_lm_run(config, folder, data=tokens, **kw, **QUIET)


def _state(folder) -> dict:
    return rec.load_checkpoint(folder / rec.CHECKPOINT)


def _same_end_state(a, b) -> None:
    sa, sb = _state(a), _state(b)
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    strip = lambda rs: [{k: v for k, v in r.items() if "second" not in k and "per_s" not in k} for r in rs]
    assert strip(read_records(a / rec.RECORDS)) == strip(read_records(b / rec.RECORDS))


def test_a_text_run_stopped_and_resumed_ends_bitwise_as_a_straight_one(tmp_path):
    data, config = fake_text(), _text_config()
    train_text_run(config, tmp_path / "straight", data=data, **QUIET)
    first = train_text_run(config, tmp_path / "resumed", data=data, stop_after_epoch=1, **QUIET)
    assert not first["finished"] and [r["epoch"] for r in read_records(tmp_path / "resumed" / rec.RECORDS)] == [1]
    torch.manual_seed(123)  # another global RNG state in between: the checkpoint's must be the one used
    assert train_text_run(config, tmp_path / "resumed", data=data, **QUIET)["finished"]
    assert [r["epoch"] for r in read_records(tmp_path / "resumed" / rec.RECORDS)] == [1, 2, 3]
    _same_end_state(tmp_path / "straight", tmp_path / "resumed")


def test_an_lm_run_stopped_and_resumed_ends_bitwise_as_a_straight_one(tmp_path):
    config, run = _lm_setup(tmp_path)
    run(tmp_path / "straight")
    assert not run(tmp_path / "resumed", stop_after_epoch=1)["finished"]
    assert [r["step"] for r in read_records(tmp_path / "resumed" / rec.RECORDS)] == [0, 3]
    torch.manual_seed(123)
    assert run(tmp_path / "resumed")["finished"]
    assert [r["step"] for r in read_records(tmp_path / "resumed" / rec.RECORDS)] == [0, 3, 6, 9]
    _same_end_state(tmp_path / "straight", tmp_path / "resumed")


def test_text_and_lm_runs_refuse_a_damaged_or_foreign_checkpoint(tmp_path):
    data = fake_text()
    train_text_run(_text_config(), tmp_path / "a", data=data, stop_after_epoch=1, **QUIET)
    path = tmp_path / "a" / rec.CHECKPOINT
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"checkpoint\.pt: sha256 .* is not the one written with it"):
        train_text_run(_text_config(), tmp_path / "a", data=data, **QUIET)
    assert len(read_records(tmp_path / "a" / rec.RECORDS)) == 1  # nothing trained, nothing rewritten

    config, run = _lm_setup(tmp_path)
    run(tmp_path / "b", stop_after_epoch=1)
    other = config.replace(lr=1e-3)
    from idinit.lab.experiments.lm_pretrain import train_lm_run
    train_lm_run(other, tmp_path / "c", data=(np.arange(3000) % 23 + 3).astype(np.uint16), stop_after_epoch=1,
                 **QUIET)
    for name in (rec.CHECKPOINT, rec.CHECKSUM):  # an intact checkpoint of another configuration
        (tmp_path / "b" / name).write_bytes((tmp_path / "c" / name).read_bytes())
    with pytest.raises(ValueError, match=r"b/checkpoint\.pt was written by another run \(differs in lr: 0.001 "
                                         r"there, 0.003 here\)"):
        run(tmp_path / "b")


def test_text_and_lm_run_folders_have_one_writer(tmp_path):
    config = _text_config(epochs=1)
    holder = RunFolder(tmp_path / "t", config)
    assert holder.prepare() is None
    with pytest.raises(RuntimeError, match="is being trained by another process"):
        train_text_run(config, tmp_path / "t", data=fake_text(), **QUIET)
    assert not (tmp_path / "t" / rec.RECORDS).exists()
    holder.release()
    assert train_text_run(config, tmp_path / "t", data=fake_text(), **QUIET)["finished"]

    lm_config, run = _lm_setup(tmp_path)
    holder = RunFolder(tmp_path / "l", lm_config)
    holder.prepare()
    (tmp_path / "l" / f".{rec.CHECKPOINT}.x{rec.TMP_SUFFIX}").write_bytes(b"left by a kill")
    with pytest.raises(RuntimeError, match=r"\.lock"):
        run(tmp_path / "l")
    holder.release()
    assert run(tmp_path / "l")["finished"]
    assert not list((tmp_path / "l").glob(f".*{rec.TMP_SUFFIX}"))  # the leftover temporary was removed

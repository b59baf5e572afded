"""Nothing from a data file is executed (issue 13 §1): a planted checkpoint or CIFAR-10 batch whose
unpickling would run code is refused with an error naming the file, and the code never runs."""
import pickle

import numpy as np
import pytest
import torch

from idinit.lab.data import load_cifar10
from idinit.lab.train import RunConfig, train_run
from idinit.lab.train import records as rec
from lab_fixtures import TINY, fake_data, load_script, write_fake_official

class Payload:
    """Unpickling this calls ``exec``, which writes ``marker``: what an attacker's file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_the_payload_runs_under_plain_pickle(tmp_path):
    """The control: the planted object really runs code when loaded the unsafe way."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "ran"


def test_a_planted_checkpoint_is_refused_on_resume(tmp_path):
    marker = tmp_path / "marker"
    config = RunConfig(name="p", **{**TINY, "epochs": 2})
    run = tmp_path / "run"
    train_run(config, run, data=fake_data(), stop_after_epoch=1, log=lambda m: None)
    state = torch.load(run / rec.CHECKPOINT, weights_only=True)
    state["records"].append(Payload(marker))
    torch.save(state, run / rec.CHECKPOINT)
    # whoever can plant the checkpoint can plant its checksum too: the unpickler must refuse it
    rec.atomic_write_json(run / rec.CHECKSUM, {"sha256": [rec.sha256_file(run / rec.CHECKPOINT)]})
    with pytest.raises(ValueError, match=r"checkpoint\.pt: refused to load"):
        train_run(config, run, data=fake_data(), log=lambda m: None)
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"checkpoint\.pt: refused to load"):
        rec.load_checkpoint(run / rec.CHECKPOINT)
    assert not marker.exists()


def test_pack_results_refuses_a_planted_checkpoint(tmp_path):
    pack_results = load_script("pack_results")
    marker = tmp_path / "marker"
    torch.save({"model": {"w": torch.ones(2)}, "x": Payload(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="refused to load"):
        pack_results._fp16_weights(tmp_path / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_official_batches_load_with_every_pickle_protocol(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_fake_official(folder)
    with open(folder / "data_batch_1", "wb") as handle:  # rewritten with this protocol
        nhwc, labels = batches["data_batch_1"]
        pickle.dump({b"data": nhwc.transpose(0, 3, 1, 2).reshape(len(labels), 3072), b"labels": labels,
                     b"filenames": [b"a.png"] * len(labels), b"batch_label": b"b1"}, handle, protocol=protocol)
    data = load_cifar10(tmp_path, protocol="official")
    np.testing.assert_array_equal(data.x_train[:6], nhwc)


def test_a_planted_cifar_batch_is_refused(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_official(folder)
    with open(folder / "data_batch_2", "wb") as handle:
        pickle.dump({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6, b"x": Payload(marker)}, handle)
    with pytest.raises(ValueError, match=r"data_batch_2: refused to unpickle builtins\.exec"):
        load_cifar10(tmp_path, protocol="official")
    assert not marker.exists()

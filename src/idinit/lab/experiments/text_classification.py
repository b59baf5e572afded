"""Text classification runs (paper Table 4, appendix B.4): their configuration and their training
loop, writing the lab's run-folder format through :class:`~idinit.lab.train.RunFolder` (the one code
path of every run: the folder is locked while it is trained, a checkpoint resumes only if its checksum,
configuration and idinit version match) so ``idinit report`` reads them like any other run.

A finished run (its summary says ``finished``) is skipped; an unfinished one resumes from its last
checkpoint (model, optimiser, records and the global RNG state dropout draws from), bitwise as if it
had never stopped.

Data order and embeddings depend on the seed only, never on the initialisation: every scheme of a
seed sees the same batches and starts from the same embedding table.
"""
from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.text import TEXT_DATASETS, glove_matrix, load_glove, load_text_dataset
from ..models.text import TEXT_ARCHS, build_text_model
from ..train.config import ConfigRecord
from ..train.metrics import summarise
from ..train.run_folder import RunFolder, global_rng_state, restore_global_rng

EMBEDDINGS = ("glove", "random")
OPTIMIZERS = ("adadelta", "adam")


@dataclass
class TextRunConfig(ConfigRecord):
    """One text-classification run. ``embedding="glove"`` starts the table from GloVe 6B 50-d
    (words GloVe lacks drawn at its per-dimension mean and std), ``"random"`` draws every row so;
    the table is trained in both (Kim 2014's "non-static")."""

    name: str = "run"
    arch: str = "textcnn"
    init: str = "idinit"
    init_options: dict = field(default_factory=dict)
    dataset: str = "sst2"
    embedding: str = "glove"
    optimizer: str = "adadelta"
    lr: float = 1.0
    rho: float = 0.95                      # AdaDelta decay (Zeiler 2012; Kim 2014's value)
    weight_decay: float = 0.0
    batch_size: int = 50                   # Kim 2014
    epochs: int = 10
    seed: int = 0
    target_accuracy: float = 0.80
    max_len: int = 64
    train_limit: int | None = None         # first N training texts (tests, timing)
    eval_limit: int | None = None
    warmup_epochs: int = 0                 # none; kept so reports group runs as the CIFAR ones

    def __post_init__(self):
        choices = {"arch": TEXT_ARCHS, "dataset": tuple(TEXT_DATASETS), "embedding": EMBEDDINGS,
                   "optimizer": OPTIMIZERS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("epochs", "batch_size", "max_len"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs != 0:
            raise ValueError(f"lr must be > 0, weight_decay >= 0 and warmup_epochs 0; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, warmup_epochs={self.warmup_epochs}")

    TASK = "text"  # not a field: no annotation

    def to_dict(self) -> dict:
        return {"task": self.TASK, **dataclasses.asdict(self)}


    # -- what the experiment runner calls (it dispatches on these for configurations of other tasks)
    def data_key(self) -> tuple:
        return ("text", self.dataset, self.max_len)

    def load_data(self, data_dir=None) -> dict:
        """The encoded dataset and the GloVe arrays, shared by every run of this dataset."""
        words, vectors = load_glove(data_dir)
        return {"text": load_text_dataset(self.dataset, data_dir, self.max_len), "glove": (words, vectors)}

    def train(self, run_dir, **kwargs) -> dict:
        return train_text_run(self, run_dir, **kwargs)


def _embedding_table(config: TextRunConfig, data: dict, dim: int) -> tuple[torch.Tensor, float]:
    words, vectors = data["glove"]
    if vectors.shape[1] != dim:
        raise ValueError(f"GloVe vectors have {vectors.shape[1]} dimensions, the model {dim}")
    generator = torch.Generator().manual_seed(config.seed)
    if config.embedding == "random":
        words = []  # every row drawn at GloVe's per-dimension mean and std
    return glove_matrix(data["text"].vocab, words, vectors, generator)


def _optimizer(model, config: TextRunConfig, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=config.lr, rho=config.rho, eps=1e-6, weight_decay=config.weight_decay)
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


@torch.no_grad()
def evaluate_text(model, split, device, batch_size: int = 500) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        lengths = split.lengths[start:start + batch_size]  # on the host: TextRNN packs by them there
        ids = split.ids[start:start + batch_size, :int(lengths.max())].to(device)
        logits = model(ids, lengths)
        correct += int((logits.argmax(1).cpu() == split.labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(split)


def _cut(split, limit):
    return split if limit is None else type(split)(split.ids[:limit], split.lengths[:limit], split.labels[:limit])


def train_text_run(config: TextRunConfig, run_dir, *, device="cpu", data: dict | None = None, data_dir=None,
                   deadline: float | None = None, log=print, compile: bool | None = None, amp: bool | None = None,
                   checkpoint_every: int = 1, stop_after_epoch: int | None = None) -> dict:
    """Train ``config`` in ``run_dir`` (skipped if its summary says finished, resumed from its
    checkpoint if it has one); return the summary.

    ``data``: :meth:`TextRunConfig.load_data`'s result (loaded from ``data_dir`` if None).
    ``deadline`` (a ``time.time()`` value) or ``stop_after_epoch`` end the call at an epoch boundary
    with a checkpoint, unfinished; a later call resumes. A checkpoint is written every
    ``checkpoint_every`` epochs and at the end. ``compile`` is accepted for the runner's sake and
    unused: these runs train eagerly, in float32 (``amp=True`` is refused).
    """
    if amp:
        raise ValueError("text classification runs train in float32; bf16 autocast (amp=True) is not supported")
    device = torch.device(device)
    folder = RunFolder(run_dir, config)
    with folder.held(log) as done:
        if done is not None:  # finished earlier
            return done
        return _train_text(config, folder, device, data, data_dir, deadline, log, checkpoint_every, stop_after_epoch)


def _train_text(config, folder, device, data, data_dir, deadline, log, checkpoint_every, stop_after_epoch) -> dict:
    data = config.load_data(data_dir) if data is None else data
    text = data["text"]
    train = _cut(text.splits["train"], config.train_limit)
    evals = {("eval_acc" if split == "test" else f"{split}_acc"): _cut(s, config.eval_limit)
             for split, s in text.splits.items() if split != "train"}

    torch.manual_seed(config.seed)
    model = build_text_model(config.arch, config.init, len(text.vocab), text.num_classes,
                             init_options=config.init_options)
    table, coverage = _embedding_table(config, data, model.embedding.embedding_dim)
    with torch.no_grad():  # after init_: schemes keep embeddings (IDI is for weight matrices)
        model.embedding.weight.copy_(table)
    model.to(device)
    optimizer = _optimizer(model, config, device)
    records = folder.resume(model, optimizer, device)
    if records:
        restore_global_rng(folder.extra["rng"], device)
        log(f"{config.run_id}: resuming after epoch {len(records)}")

    # The training texts live on the device and each epoch's order is copied there once: a step then
    # copies nothing from the host, so a small model's steps queue up without waiting on each other.
    train_ids, train_labels = train.ids.to(device), train.labels.to(device)
    finished = True
    for epoch in range(len(records), config.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        device_order = order.to(device)
        loss_sum = torch.zeros((), device=device)  # summed on the device: one host sync an epoch
        correct = torch.zeros((), dtype=torch.int64, device=device)
        steps = 0
        model.train()
        for start in range(0, len(train), config.batch_size):
            lengths = train.lengths[order[start:start + config.batch_size]]  # host: the batch's longest text
            index = device_order[start:start + config.batch_size]
            ids, labels = train_ids[index, :int(lengths.max())], train_labels[index]
            logits = model(ids, lengths)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == labels).sum()
            steps += 1
        seconds = time.perf_counter() - t0
        train_loss = loss_sum.item() / steps
        record = {"epoch": epoch + 1, "train_loss": train_loss if math.isfinite(train_loss) else None,
                  "train_acc": correct.item() / len(train), "lr": config.lr, "seconds": seconds,
                  "texts_per_s": len(train) / seconds}
        t1 = time.perf_counter()
        for key, split in evals.items():
            record[key] = evaluate_text(model, split, device)
        record["eval_seconds"] = time.perf_counter() - t1
        records.append(record)
        folder.append(record)
        last, diverged = epoch + 1 == config.epochs, not math.isfinite(train_loss)
        stop = not last and (stop_after_epoch == epoch + 1
                             or (deadline is not None and time.time() + seconds > deadline))
        if last or stop or diverged or (epoch + 1) % checkpoint_every == 0:
            folder.save_checkpoint(model, optimizer, records, {"rng": global_rng_state(device)})
        if diverged:
            log(f"{config.run_id}: training loss is not finite after epoch {epoch + 1}; stopping the run")
            break
        if stop:
            finished = False
            break
    summary = {**summarise(records, config.target_accuracy), "finished": finished, "run_id": config.run_id,
               "name": config.name, "seed": config.seed, "glove_coverage": coverage,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
               "torch": torch.__version__, "python": platform.python_version()}
    if finished:
        folder.finish(summary)
    return summary


__all__ = ["EMBEDDINGS", "OPTIMIZERS", "TextRunConfig", "evaluate_text", "train_text_run"]

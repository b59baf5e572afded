"""One training run, start to finish, in one file: data on the device, the model built and
initialised by name, SGD or Adam with warm-up + cosine, optional mixup and label smoothing, bf16
autocast and channels_last on CUDA, ``torch.compile(mode="reduce-overhead")`` on CUDA with a
fallback to eager, per-epoch JSONL records and an atomic checkpoint, and resume.

Every evaluation also records ``eval_output_std``, the standard deviation of the model's outputs
(logits) over the evaluation set (the quantity the paper tracks for Res-112 in appendix C.6).

The whole step is :func:`_make_step`; the loop is :func:`train_run`.
"""
from __future__ import annotations

import math
import pathlib
import platform
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..data import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, DeviceLoader, load_cifar10, load_mnist
from ..models import build_model, parameter_groups
from . import records as rec
from .config import RunConfig
from .metrics import summarise


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from ``1/warmup_steps`` to 1 over ``warmup_steps``, then cosine from 1 to 0
    over the remaining steps (Loshchilov & Hutter 2017, without restarts)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# Per dataset: input shape, normalisation and training augmentation. MNIST gets none (appendix C.1
# states none); CIFAR-10 the standard pad-4 crop and flip of He et al. (2016).
DATA_SPECS = {
    "cifar10": {"in_channels": 3, "image_size": 32, "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "pad": 4, "flip": True},
    "mnist": {"in_channels": 1, "image_size": 28, "mean": (0.1307,), "std": (0.3081,), "pad": 0, "flip": False},
}


def load_run_data(config: RunConfig, data_dir=None):
    """The arrays a run trains and evaluates on, cut to ``train_limit`` / ``eval_limit``.

    MNIST comes in the same record type as CIFAR-10 (images uint8 NHWC with one channel; its
    10k test set as the evaluation set; no second test set)."""
    if config.dataset == "mnist":
        x_train, y_train, x_test, y_test = load_mnist(data_dir)
        data = CIFAR10(x_train[..., None], y_train, x_test[..., None], y_test, None, None, "mnist")
    else:
        data = load_cifar10(data_dir, protocol=config.protocol,
                            train_chunks=None if config.protocol == "official" else config.train_chunks)
    return cut_data(data, config)


def cut_data(data, config: RunConfig):
    tl, el = config.train_limit, config.eval_limit
    return data._replace(x_train=data.x_train[:tl], y_train=data.y_train[:tl],
                         x_eval=data.x_eval[:el], y_eval=data.y_eval[:el])


def make_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.init, config.lr)
    for group in groups:
        group["initial_lr"] = group["lr"]
    # The fused CUDA kernels update all parameters in a few launches (the loop is launch-bound).
    extra = {"fused": True} if device.type == "cuda" else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay, **extra)
    return torch.optim.Adam(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                            weight_decay=config.weight_decay, **extra)


def _make_step(model, config: RunConfig, amp: bool, device_type: str):
    """The training step's differentiable part: mixup (Zhang et al. 2018), forward under bf16
    autocast, cross-entropy (with label smoothing). Returns (loss, number of correct predictions,
    weighted as the mixed labels are)."""
    mixup, smoothing = config.mixup_alpha > 0, config.label_smoothing

    def forward_loss(x, y, perm, lam):
        if mixup:
            x = lam * x + (1 - lam) * x[perm]
        with torch.autocast(device_type, torch.bfloat16, enabled=amp):
            logits = model(x)
        if amp:  # the loss in float32, not bf16; otherwise in the model's own dtype (float64 in tests)
            logits = logits.float()
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        correct = (logits.argmax(1) == y).sum().float()
        if mixup:
            y_b = y[perm]
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=smoothing)
            correct = lam * correct + (1 - lam) * (logits.argmax(1) == y_b).sum().float()
        return loss, correct

    return forward_loss


@torch.no_grad()
def evaluate_with_output_std(model, loader: DeviceLoader, amp: bool) -> tuple[float, float]:
    """Top-1 accuracy of ``model`` (eval mode) over one pass of ``loader``, and the standard
    deviation of all its outputs (every logit of every image; NaN if an output is not finite)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    moments = torch.zeros(2, dtype=torch.float64, device=loader.device)  # sum, sum of squares
    count = 0
    for x, y in loader.epoch():
        with torch.autocast(loader.device.type, torch.bfloat16, enabled=amp):
            logits = model(x)
        correct += (logits.argmax(1) == y).sum()
        z = logits.double()
        moments += torch.stack([z.sum(), z.square().sum()])
        count += z.numel()
    model.train(was_training)
    total, squares = moments.tolist()
    mean = total / count
    # one-pass variance, clamped at 0 against rounding; float64 keeps it exact enough for logits
    std = math.sqrt(max(squares / count - mean * mean, 0.0)) if math.isfinite(squares) else float("nan")
    return correct.item() / loader.num_images, std


def evaluate(model, loader: DeviceLoader, amp: bool) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over one pass of ``loader``."""
    return evaluate_with_output_std(model, loader, amp)[0]


def _epoch_mixing(config: RunConfig, epoch: int, steps: int, batch: int, device):
    """Per-step mixup coefficients and partner permutations for one epoch, seeded by (seed, epoch)."""
    if config.mixup_alpha <= 0:
        return None, None
    rng = np.random.default_rng([config.seed, epoch, 7])
    lams = torch.tensor(rng.beta(config.mixup_alpha, config.mixup_alpha, steps), dtype=torch.float32)
    perms = torch.from_numpy(np.stack([rng.permutation(batch) for _ in range(steps)]))
    return lams.to(device), perms.to(device)


def train_run(config: RunConfig, run_dir, *, device="cpu", data=None, data_dir=None, compile: bool | None = None,
              amp: bool | None = None, channels_last: bool | None = None, dtype: torch.dtype | None = None,
              checkpoint_every: int = 1, stop_after_epoch: int | None = None, deadline: float | None = None,
              log=print) -> dict:
    """Train ``config`` in ``run_dir`` (resuming from its checkpoint if there is one); return the summary.

    ``compile`` / ``amp`` (bf16 autocast) / ``channels_last`` default to on for CUDA, off elsewhere.
    ``dtype`` (default float32) is the dtype of the model, its inputs and the loss; ``torch.float64``
    makes two trainings that should agree (packed and single, resumed and straight) agree to ~1e-12
    on any CPU, whatever its kernels or thread count (it excludes ``amp``).
    ``data``: preloaded :class:`~idinit.lab.data.CIFAR10` arrays (already cut), else loaded from
    ``data_dir``. ``stop_after_epoch`` and ``deadline`` (a ``time.time()`` value) end the call early
    after a checkpoint; the returned summary then has ``finished: False`` and a later call resumes.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    compile = cuda if compile is None else compile
    amp = cuda if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    amp, dtype = _resolve_dtype(amp, dtype, cuda)
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path, records_path = run_dir / rec.CONFIG, run_dir / rec.RECORDS
    checkpoint_path, summary_path = run_dir / rec.CHECKPOINT, run_dir / rec.SUMMARY
    if config_path.is_file():
        stored = rec.read_json(config_path)
        if stored != config.to_dict():
            diff = sorted(k for k in set(stored) | set(config.to_dict()) if stored.get(k) != config.to_dict().get(k))
            raise ValueError(f"{run_dir} holds a run of a different configuration (differs in {diff}); "
                             "use another output folder")
    else:
        rec.atomic_write_json(config_path, config.to_dict())
    if summary_path.is_file():
        summary = rec.read_json(summary_path)
        if summary.get("finished"):
            return summary

    if data is None:
        data = load_run_data(config, data_dir)
    torch.manual_seed(config.seed)
    spec = DATA_SPECS[config.dataset]
    model = build_model(config.arch, config.init, config.shortcut, init_options=config.init_options,
                        in_channels=spec["in_channels"], image_size=spec["image_size"])
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    model = model.to(device=device, dtype=dtype, memory_format=memory_format)
    optimizer = make_optimizer(model, config, device)

    records: list[dict] = []
    if checkpoint_path.is_file():
        state = rec.load_checkpoint(checkpoint_path, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        records = state["records"]
        log(f"{config.run_id}: resuming after epoch {len(records)}")
    rec.write_records(records_path, records)  # the checkpoint is the truth (see records.py)

    x_dtype = torch.bfloat16 if amp else dtype
    norm = {"mean": spec["mean"], "std": spec["std"]}
    train_loader = DeviceLoader(data.x_train, data.y_train, config.batch_size, device=device, train=True,
                                pad=spec["pad"], flip=spec["flip"], seed=config.seed, channels_last=channels_last,
                                dtype=x_dtype, **norm)
    eval_loaders = {"eval_acc": DeviceLoader(data.x_eval, data.y_eval, config.eval_batch_size, device=device,
                                             train=False, channels_last=channels_last, dtype=x_dtype, **norm)}
    if data.x_test1k is not None:
        eval_loaders["test1k_acc"] = DeviceLoader(data.x_test1k, data.y_test1k, config.eval_batch_size,
                                                  device=device, train=False, channels_last=channels_last,
                                                  dtype=x_dtype, **norm)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs

    eager_step = _make_step(model, config, amp, device.type)
    if compile:
        # A fresh compile per run: each run's closure would otherwise count as a recompile of the
        # same code, and dynamo silently falls back to eager past its recompile limit (8). The
        # on-disk inductor cache keeps a repeated architecture's rebuild short.
        torch._dynamo.reset()
    step_fn = torch.compile(eager_step, mode="reduce-overhead", dynamic=False) if compile else eager_step
    compiled = compile
    model.train()
    finished, stopped_early = True, False
    for epoch in range(len(records), config.epochs):
        t0 = time.perf_counter()
        lams, perms = _epoch_mixing(config, epoch, steps_per_epoch, config.batch_size, device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct_sum = torch.zeros((), dtype=torch.float64, device=device)
        lr_start = None
        for i, (x, y) in enumerate(train_loader.epoch(epoch)):
            factor = lr_factor(epoch * steps_per_epoch + i, total_steps, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            lr_start = config.lr * factor if lr_start is None else lr_start
            lam = lams[i] if lams is not None else None
            perm = perms[i] if perms is not None else None
            if compiled:
                torch.compiler.cudagraph_mark_step_begin()
                try:
                    loss, correct = step_fn(x, y, perm, lam)
                    loss.backward()
                except Exception as err:  # compile is an optimisation: fall back, say so, go on
                    if epoch != len(records) or i != 0:
                        raise
                    log(f"{config.run_id}: torch.compile failed ({type(err).__name__}: {err}); training eagerly")
                    optimizer.zero_grad(set_to_none=True)
                    step_fn, compiled = eager_step, False
                    loss, correct = step_fn(x, y, perm, lam)
                    loss.backward()
            else:
                loss, correct = step_fn(x, y, perm, lam)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            correct_sum += correct.detach()
        train_loss = loss_sum.item() / steps_per_epoch  # the epoch's one host sync
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": train_loss if math.isfinite(train_loss) else None,
                  "train_acc": correct_sum.item() / train_loader.num_images, "lr": lr_start,
                  "seconds": seconds, "images_per_s": train_loader.num_images / seconds}
        last = epoch + 1 == config.epochs
        diverged = not math.isfinite(train_loss)
        if (epoch + 1) % config.eval_every == 0 or last or diverged:
            t1 = time.perf_counter()
            for key, loader in eval_loaders.items():
                if key == "eval_acc":
                    record[key], output_std = evaluate_with_output_std(model, loader, amp)
                    record["eval_output_std"] = output_std if math.isfinite(output_std) else None
                else:
                    record[key] = evaluate(model, loader, amp)
            record["eval_seconds"] = time.perf_counter() - t1
        records.append(record)
        rec.append_record(records_path, record)
        if diverged or last or (epoch + 1) % checkpoint_every == 0 or (stop_after_epoch == epoch + 1) or (
                deadline is not None and time.time() + 2 * seconds > deadline):
            rec.atomic_torch_save(checkpoint_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                    "records": records, "config": config.to_dict()})
        if diverged:
            log(f"{config.run_id}: training loss is not finite after epoch {epoch + 1}; stopping the run")
            break
        if not last and (stop_after_epoch == epoch + 1 or (deadline is not None and time.time() + 2 * seconds > deadline)):
            finished, stopped_early = False, True
            break

    summary = {**summarise(records, config.target_accuracy), "finished": finished, "run_id": config.run_id,
               "name": config.name, "seed": config.seed, "compiled": compiled, "amp": amp,
               "channels_last": channels_last, "device": _device_name(device), "torch": torch.__version__,
               "python": platform.python_version()}
    if not stopped_early:
        rec.atomic_write_json(summary_path, summary)
    return summary


def _resolve_dtype(amp: bool | None, dtype: torch.dtype | None, cuda: bool) -> tuple[bool, torch.dtype]:
    """(amp, dtype) of a run: bf16 autocast by default on CUDA over float32 weights; an explicit
    ``dtype`` other than float32 turns the default autocast off and refuses an explicit one."""
    if dtype is None or dtype == torch.float32:
        return (cuda if amp is None else amp), torch.float32
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if amp:
        raise ValueError(f"amp (bf16 autocast) needs float32 weights, got dtype {dtype}")
    return False, dtype


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"

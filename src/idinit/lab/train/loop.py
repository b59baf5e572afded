"""The training loop: one or more runs from start (or their checkpoints) to their summaries.

:func:`train` is the one loop. A run alone (:func:`train_run`) is a pack of one; a pack of runs
trained as one grouped network (:func:`train_packed`) differs only in how the forward pass is
built (:mod:`idinit.lab.train.forward`). What one step does is :mod:`idinit.lab.train.step`; what a
run folder holds and how it resumes is :mod:`idinit.lab.train.run_folder`.

Data live on the device (:class:`~idinit.lab.data.DeviceLoader`); bf16 autocast, channels_last
and ``torch.compile`` default to on for CUDA and off elsewhere. Every evaluation also records
``eval_output_std``, the standard deviation of the model's outputs (logits) over the evaluation
set (the quantity the paper tracks for Res-112 in appendix C.6).
"""
from __future__ import annotations

import math
import platform
import time

import torch
import torch.distributed as dist

from ..data import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, DeviceLoader, load_cifar10, load_mnist
from ..models import build_model
from . import forward as fwd
from .config import RunConfig
from .metrics import summarise
from .run_folder import RunFolder
from .step import COMPILE_MODE, TrainStep, epoch_mixing, lr_factor, make_optimizer

# Per dataset: input shape, normalisation and training augmentation. MNIST gets none (appendix C.1
# states none); CIFAR-10 the standard pad-4 crop and flip of He et al. (2016).
DATA_SPECS = {
    "cifar10": {"in_channels": 3, "image_size": 32, "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "pad": 4, "flip": True},
    "mnist": {"in_channels": 1, "image_size": 28, "mean": (0.1307,), "std": (0.3081,), "pad": 0, "flip": False},
}
# A call stops early (with a checkpoint) when the next epoch, judged by the latest epoch after
# the call's first (which carries torch.compile's warm-up), might end less than this many epoch
# lengths before the deadline.
DEADLINE_MARGIN = 2.0


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


@torch.no_grad()
def evaluate_members(forward: fwd.Forward, loader: DeviceLoader, amp: bool) -> list[tuple[float, float]]:
    """Per member: top-1 accuracy (eval mode) over one pass of ``loader``, and the standard
    deviation of all its outputs (every logit of every image; NaN if an output is not finite)."""
    was_training = forward.module.training
    forward.module.eval()
    correct, moments = 0, 0  # per member; moments: sum, sum of squares in float64
    count = 0
    for x, y in loader.epoch():
        with torch.autocast(loader.device.type, torch.bfloat16, enabled=amp):
            logits = forward.eval(x)  # (B, N, classes)
        correct = correct + (logits.argmax(2) == y[:, None]).sum(0)
        z = logits.double()
        moments = moments + torch.stack([z.sum((0, 2)), z.square().sum((0, 2))], 1)
        count += z.shape[0] * z.shape[2]
    forward.module.train(was_training)
    out = []
    for hits, (total, squares) in zip(correct.tolist(), moments.tolist()):
        mean = total / count
        # one-pass variance, clamped at 0 against rounding; float64 keeps it exact enough for logits
        std = math.sqrt(max(squares / count - mean * mean, 0.0)) if math.isfinite(squares) else float("nan")
        out.append((hits / loader.num_images, std))
    return out


def evaluate_with_output_std(model, loader: DeviceLoader, amp: bool) -> tuple[float, float]:
    """Top-1 accuracy of ``model`` (eval mode) over one pass of ``loader`` and the std of its outputs."""
    return evaluate_members(fwd.alone(model), loader, amp)[0]


def evaluate(model, loader: DeviceLoader, amp: bool) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over one pass of ``loader``."""
    return evaluate_with_output_std(model, loader, amp)[0]


def runtime_settings(device, compile, amp, channels_last, dtype) -> dict:
    """The one place runtime defaults are decided: compile, bf16 autocast and channels_last on for
    CUDA, off elsewhere; ``dtype`` float32 unless given (float64 excludes autocast)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if dtype is None or dtype == torch.float32:
        dtype, amp = torch.float32, cuda if amp is None else amp
    elif not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    elif amp:
        raise ValueError(f"amp (bf16 autocast) needs float32 weights, got dtype {dtype}")
    else:
        amp = False
    shard = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    return {"device": device, "compile": cuda if compile is None else compile, "amp": amp,
            "channels_last": cuda if channels_last is None else channels_last, "dtype": dtype, "shard": shard}


def train(configs: list[RunConfig], run_dirs: list, *, pack: bool = False, device="cpu", data=None, data_dir=None,
          compile: bool | None = None, amp: bool | None = None, channels_last: bool | None = None,
          dtype: torch.dtype | None = None, checkpoint_every: int = 1, stop_after_epoch: int | None = None,
          deadline: float | None = None, compile_mode: str = COMPILE_MODE, dense_channels: int = fwd.DENSE_CHANNELS,
          log=print) -> list[dict]:
    """Train ``configs`` together, each in its run folder (resuming from its checkpoint); return one
    summary per run, in order. ``pack=False`` needs a single run; ``pack=True`` trains the runs as
    one :class:`PackedCifarResNet` (see :func:`train_packed`; ``dense_channels`` is its option).
    ``compile_mode``: :class:`~idinit.lab.train.step.TrainStep`'s. Other arguments: see :func:`train_run`."""
    if len(configs) != len(run_dirs) or not configs:
        raise ValueError(f"need one run folder per configuration, got {len(configs)} and {len(run_dirs)}")
    if pack:
        fwd.check_pack(configs)
    elif len(configs) > 1:
        raise ValueError("several runs train together only as a pack (pack=True)")
    rt = runtime_settings(device, compile, amp, channels_last, dtype)
    rt.update(compile_mode=compile_mode, dense_channels=dense_channels)
    rank, world = rt["shard"]
    if world > 1 and (pack or configs[0].batch_size % world):
        raise ValueError(f"data-parallel training ({world} processes) takes one run whose batch size divides by "
                         f"{world}; got {len(configs)} run(s), pack={pack}, batch size {configs[0].batch_size}")
    # Under data parallelism only rank 0 writes the run folder; the others read it once it is ready.
    folders = [RunFolder(d, c, writer=rank == 0) for c, d in zip(configs, run_dirs)]
    try:
        if rank > 0:
            dist.barrier()
        summaries = [folder.prepare(log) for folder in folders]
        if world > 1 and rank == 0:
            dist.barrier()
        return _train(folders, summaries, pack, rt, data, data_dir, checkpoint_every, stop_after_epoch, deadline, log)
    finally:
        for folder in folders:
            folder.release()


def _train(folders, summaries, pack, rt, data, data_dir, checkpoint_every, stop_after_epoch, deadline, log):
    """The loop of :func:`train`, over locked and prepared run folders."""
    device, amp, channels_last = rt["device"], rt["amp"], rt["channels_last"]
    active = [k for k, s in enumerate(summaries) if s is None]
    if not active:
        return summaries
    folders = [folders[k] for k in active]
    configs_a = [f.config for f in folders]
    first = configs_a[0]
    if data is None:
        data = load_run_data(first, data_dir)
    spec = DATA_SPECS[first.dataset]

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    members, optimizers, records = [], [], []
    for folder in folders:
        config = folder.config
        torch.manual_seed(config.seed)  # a member starts as the run alone starts
        model = build_model(config.arch, config.init, config.shortcut, init_options=config.init_options,
                            in_channels=spec["in_channels"], image_size=spec["image_size"])
        model = model.to(device=device, dtype=rt["dtype"], memory_format=memory_format)
        optimizer = make_optimizer(model, config, device)
        records.append(folder.resume(model, optimizer, device))
        members.append(model)
        optimizers.append(optimizer)
    done = {len(r) for r in records}
    if len(done) > 1:
        raise ValueError(f"members stopped after different epochs {sorted(done)}; resume them one by one")
    start_epoch = done.pop()
    if start_epoch:
        log(f"{first.run_id}{f' and {len(folders) - 1} more' if len(folders) > 1 else ''}: "
            f"resuming after epoch {start_epoch}")
    rank, world = rt["shard"]
    if pack:
        forward = fwd.packed(members, memory_format, rt["dense_channels"])
    elif world > 1:  # data-parallel: gradients averaged over the processes' shards of each batch
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in members[0].modules())
        if has_bn and device.type != "cuda":
            raise ValueError(f"{folders[0].config.run_id}: data-parallel BN models need CUDA (SyncBatchNorm "
                             "works only on GPUs); on the CPU train a model without BN (e.g. init fixup)")
        # BN statistics over the whole batch, as in one process (same parameter objects, same keys)
        members[0] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(members[0])
        forward = fwd.alone(members[0], torch.nn.parallel.DistributedDataParallel(members[0]))
    else:
        forward = fwd.alone(members[0])

    x_dtype = torch.bfloat16 if amp else rt["dtype"]
    common = dict(device=device, channels_last=channels_last, dtype=x_dtype, mean=spec["mean"], std=spec["std"])
    loaders = [DeviceLoader(data.x_train, data.y_train, c.batch_size, train=True, pad=spec["pad"], flip=spec["flip"],
                            seed=c.seed, **common) for c in configs_a]
    eval_loaders = {"eval_acc": DeviceLoader(data.x_eval, data.y_eval, first.eval_batch_size, train=False, **common)}
    if data.x_test1k is not None:
        eval_loaders["test1k_acc"] = DeviceLoader(data.x_test1k, data.y_test1k, first.eval_batch_size, train=False,
                                                  **common)
    steps_per_epoch, num_images = len(loaders[0]), loaders[0].num_images
    step = TrainStep(forward.train, configs_a, optimizers, amp=amp, device_type=device.type, compile=rt["compile"],
                     steps_per_epoch=steps_per_epoch, shard=rt["shard"], log=log, compile_mode=rt["compile_mode"])
    n = len(members)
    alive = [True] * n
    finished, stopped_early, steady = True, False, 0.0
    forward.module.train()
    for epoch in range(start_epoch, first.epochs):
        t0 = time.perf_counter()
        mixing = [epoch_mixing(c, epoch, steps_per_epoch, c.batch_size, device) for c in configs_a]
        loss_sum = torch.zeros(n, dtype=torch.float64, device=device)
        correct_sum = torch.zeros(n, dtype=torch.float64, device=device)
        for i, batches in enumerate(zip(*(loader.epoch(epoch) for loader in loaders))):
            xs, ys = [x for x, _ in batches], [y for _, y in batches]
            perms = [m[1][i] if m[1] is not None else None for m in mixing]
            lams = [m[0][i] if m[0] is not None else None for m in mixing]
            losses, corrects = step(epoch, i, xs, ys, perms, lams)
            loss_sum += losses
            correct_sum += corrects
        if world > 1:  # each process summed its shard's mean losses and correct counts
            dist.all_reduce(loss_sum)
            dist.all_reduce(correct_sum)
            loss_sum /= world
        train_losses = (loss_sum / steps_per_epoch).tolist()  # the epoch's one host sync
        train_accs = (correct_sum / num_images).tolist()
        seconds = time.perf_counter() - t0
        forward.sync(steps_per_epoch)
        last = epoch + 1 == first.epochs
        evals: dict[str, list] = {}
        if (epoch + 1) % first.eval_every == 0 or last or not all(
                math.isfinite(v) for v, a in zip(train_losses, alive) if a):
            t1 = time.perf_counter()
            for key, loader in eval_loaders.items():
                results = evaluate_members(forward, loader, amp)
                evals[key] = [acc for acc, _ in results]
                if key == "eval_acc":
                    evals["eval_output_std"] = [std if math.isfinite(std) else None for _, std in results]
            evals["eval_seconds"] = [time.perf_counter() - t1] * n
        steady = seconds if epoch > start_epoch else steady
        stop_now = not last and (stop_after_epoch == epoch + 1 or (
            deadline is not None and time.time() + DEADLINE_MARGIN * steady > deadline))
        if world > 1:  # rank 0's clock decides for all
            flag = torch.tensor([float(stop_now)], device=device)
            dist.broadcast(flag, 0)
            stop_now = bool(flag.item())
        for k, folder in enumerate(folders):
            if not alive[k]:
                continue
            loss_k = train_losses[k]
            record = {"epoch": epoch + 1, "train_loss": loss_k if math.isfinite(loss_k) else None,
                      "train_acc": train_accs[k], "lr": step.lr(k, epoch * steps_per_epoch), "seconds": seconds,
                      "images_per_s": num_images / seconds}
            if forward.packed:
                record.update(pack_images_per_s=n * num_images / seconds, packed=n)
            record.update({key: values[k] for key, values in evals.items()})
            records[k].append(record)
            folder.append(record)
            diverged = not math.isfinite(loss_k)
            if last or stop_now or diverged or (epoch + 1) % checkpoint_every == 0:
                folder.save_checkpoint(members[k], optimizers[k], records[k])
            if diverged:
                # A diverged run ends here. Its pack-mates are unaffected (grouped convolutions,
                # per-channel BN and per-member heads never mix members), so they go on.
                log(f"{folder.config.run_id}: training loss is not finite after epoch {epoch + 1}; stopping the run")
                alive[k] = False
                summaries[active[k]] = _summary(folder, records[k], True, step.compiled, rt, forward.packed)
        if not any(alive):
            break
        if stop_now:
            finished, stopped_early = False, True
            break

    for k, folder in enumerate(folders):
        if alive[k]:
            summaries[active[k]] = _summary(folder, records[k], finished, step.compiled, rt, forward.packed,
                                            write=not stopped_early)
    return summaries


def _summary(folder: RunFolder, records, finished, compiled, rt, packed, write=True) -> dict:
    config = folder.config
    summary = {**summarise(records, config.target_accuracy), "finished": finished, "run_id": config.run_id,
               "name": config.name, "seed": config.seed, "compiled": compiled, "amp": rt["amp"],
               "channels_last": rt["channels_last"], **({"packed": packed} if packed else {}),
               **({"compile_mode": rt["compile_mode"]} if compiled else {}),
               **({"dense_channels": rt["dense_channels"]} if packed and rt["dense_channels"] else {}),
               "dtype": str(rt["dtype"]).removeprefix("torch."), "device": _device_name(rt["device"]),
               "torch": torch.__version__, "python": platform.python_version()}
    if write:
        folder.finish(summary)
    return summary


def train_run(config: RunConfig, run_dir, **runtime) -> dict:
    """Train ``config`` in ``run_dir`` (resuming from its checkpoint if there is one); return the summary.

    Keyword arguments: ``device`` (default "cpu"); ``compile`` / ``amp`` (bf16 autocast) /
    ``channels_last`` default to on for CUDA, off elsewhere; ``dtype`` (default float32) is the
    dtype of the model, its inputs and the loss: ``torch.float64`` makes two trainings that should
    agree (packed and alone, resumed and straight) agree to ~1e-12 on any CPU and thread count (it
    excludes ``amp``). ``data``: preloaded :class:`~idinit.lab.data.CIFAR10` arrays (already cut),
    else loaded from ``data_dir``. ``stop_after_epoch`` and ``deadline`` (a ``time.time()`` value)
    end the call early after a checkpoint; the returned summary then has ``finished: False`` and a
    later call resumes. ``checkpoint_every`` epochs (and at the end) a checkpoint is written.
    """
    return train([config], [run_dir], **runtime)[0]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


__all__ = ["DATA_SPECS", "cut_data", "evaluate", "evaluate_members", "evaluate_with_output_std", "load_run_data",
           "lr_factor", "make_optimizer", "train", "train_run"]

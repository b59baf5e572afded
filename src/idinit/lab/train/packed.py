"""Train N runs of one architecture at once, packed into one grouped network (see
:mod:`idinit.lab.models.packed_resnet` for why and how much faster).

Each member run is exactly the run :func:`~idinit.lab.train.loop.train_run` would make of its
configuration: the same seeded initialisation, data order, augmentation, mixup draws and
learning-rate schedule, its own optimiser (SGD and Adam members can share a pack), and the same
files in its own run folder (config, per-epoch JSONL records, checkpoint, summary), so a member can
be resumed or continued by ``train_run`` and is reported like any other run. What members must
share: the architecture variant, batch size, epochs, data protocol and evaluation cadence.
"""
from __future__ import annotations

import math
import pathlib
import platform
import time

import torch
import torch.nn.functional as F

from ..data import DeviceLoader
from ..models import build_model
from ..models.cifar_resnet import CifarResNet
from ..models.packed_resnet import PackedCifarResNet
from . import records as rec
from .config import RunConfig
from .loop import _device_name, _epoch_mixing, _resolve_dtype, load_run_data, lr_factor, make_optimizer
from .metrics import summarise

# Fields every member of a pack must share (the rest, e.g. init, seed, optimiser, lr, warm-up,
# mixup, may differ).
SHARED_FIELDS = ("arch", "dataset", "shortcut", "batch_size", "epochs", "protocol", "train_chunks", "train_limit",
                 "eval_limit", "eval_every", "eval_batch_size")


def packable(config: RunConfig) -> bool:
    """Whether the run's model is a plain :class:`CifarResNet` variant (Fixup's is not; AllConv,
    Linear-5 and Res-112 are other architectures)."""
    return config.init != "fixup" and config.arch.startswith("resnet") and config.arch[6:].isdigit()


def pack_key(config: RunConfig) -> tuple:
    """Runs with equal keys can share a pack (same architecture variant and data cadence)."""
    variant = {"skipinit": "nonorm-gate", "rezero": "norm-gate"}.get(config.init, "norm")
    return (variant,) + tuple(repr(getattr(config, f)) for f in SHARED_FIELDS)


def _member_forward_loss(packed, configs, amp: bool, device_type: str, memory_format):
    """The packed step's differentiable part: per-member mixup, one packed forward under bf16
    autocast, per-member cross-entropy; returns (sum of member losses, per-member losses,
    per-member correct counts)."""
    n = len(configs)
    mixup = [c.mixup_alpha > 0 for c in configs]
    smoothing = [c.label_smoothing for c in configs]

    def forward_loss(xs, ys, perms, lams):  # xs (N, B, C, H, W); ys, perms (N, B); lams (N,)
        parts = []
        for i in range(n):
            x = xs[i]
            if mixup[i]:
                x = lams[i] * x + (1 - lams[i]) * x[perms[i]]
            parts.append(x)
        with torch.autocast(device_type, torch.bfloat16, enabled=amp):
            logits = packed(torch.cat(parts, 1).contiguous(memory_format=memory_format))
        if amp:
            logits = logits.float()
        losses, corrects = [], []
        for i in range(n):
            out, y = logits[:, i], ys[i]
            loss = F.cross_entropy(out, y, label_smoothing=smoothing[i])
            correct = (out.argmax(1) == y).sum().float()
            if mixup[i]:
                y_b = y[perms[i]]
                loss = lams[i] * loss + (1 - lams[i]) * F.cross_entropy(out, y_b, label_smoothing=smoothing[i])
                correct = lams[i] * correct + (1 - lams[i]) * (out.argmax(1) == y_b).sum().float()
            losses.append(loss)
            corrects.append(correct)
        losses, corrects = torch.stack(losses), torch.stack(corrects)
        return losses.sum(), losses.detach(), corrects.detach()

    return forward_loss


@torch.no_grad()
def evaluate_packed(packed: PackedCifarResNet, loader: DeviceLoader, amp: bool,
                    memory_format=torch.contiguous_format) -> list[float]:
    """Top-1 accuracy of every member (eval mode) on the same evaluation set."""
    was_training = packed.training
    packed.eval()
    correct = torch.zeros(packed.n, dtype=torch.int64, device=loader.device)
    for x, y in loader.epoch():
        with torch.autocast(loader.device.type, torch.bfloat16, enabled=amp):
            logits = packed(x.repeat(1, packed.n, 1, 1).contiguous(memory_format=memory_format))
        correct += (logits.argmax(2) == y[:, None]).sum(0)
    packed.train(was_training)
    return (correct.double() / loader.num_images).tolist()


def _prepare_member(config: RunConfig, run_dir: pathlib.Path) -> tuple[bool, dict | None]:
    """Write or check the member's config; return (finished, stored summary)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path, summary_path = run_dir / rec.CONFIG, run_dir / rec.SUMMARY
    if config_path.is_file():
        stored = rec.read_json(config_path)
        if stored != config.to_dict():
            raise ValueError(f"{run_dir} holds a run of a different configuration; use another output folder")
    else:
        rec.atomic_write_json(config_path, config.to_dict())
    if summary_path.is_file():
        summary = rec.read_json(summary_path)
        if summary.get("finished"):
            return True, summary
    return False, None


def train_packed(configs: list[RunConfig], run_dirs: list, *, device="cpu", data=None, data_dir=None,
                 compile: bool | None = None, amp: bool | None = None, channels_last: bool | None = None,
                 dtype: torch.dtype | None = None, checkpoint_every: int = 1, stop_after_epoch: int | None = None, deadline: float | None = None,
                 log=print) -> list[dict]:
    """Train ``configs`` together (one pack); return one summary per member, in order.

    Members already finished are left alone; the others must all have stopped after the same epoch
    (they always do when they were trained as one pack). Arguments as in ``train_run``.
    """
    if len(configs) != len(run_dirs) or not configs:
        raise ValueError(f"need one run folder per configuration, got {len(configs)} and {len(run_dirs)}")
    keys = {pack_key(c) for c in configs}
    if len(keys) > 1 or not all(packable(c) for c in configs):
        raise ValueError("these runs cannot share a pack: they must all be CifarResNet variants of one "
                         f"architecture and share {SHARED_FIELDS}; got {[c.run_id for c in configs]}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    compile = cuda if compile is None else compile
    amp = cuda if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    amp, dtype = _resolve_dtype(amp, dtype, cuda)
    run_dirs = [pathlib.Path(d) for d in run_dirs]

    summaries: list[dict | None] = [None] * len(configs)
    active = []
    for i, (config, run_dir) in enumerate(zip(configs, run_dirs)):
        finished, summary = _prepare_member(config, run_dir)
        if finished:
            summaries[i] = summary
        else:
            active.append(i)
    if not active:
        return summaries
    configs_a = [configs[i] for i in active]
    dirs_a = [run_dirs[i] for i in active]
    if data is None:
        data = load_run_data(configs_a[0], data_dir)

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    members, optimizers, records = [], [], []
    for config, run_dir in zip(configs_a, dirs_a):
        torch.manual_seed(config.seed)  # the same initialisation as train_run gives this config
        model = build_model(config.arch, config.init, config.shortcut, init_options=config.init_options)
        if type(model) is not CifarResNet:
            raise ValueError(f"{config.run_id}: init {config.init!r} builds a {type(model).__name__}, which cannot be packed")
        model = model.to(device=device, dtype=dtype, memory_format=memory_format)
        optimizer = make_optimizer(model, config, device)
        member_records: list[dict] = []
        checkpoint = run_dir / rec.CHECKPOINT
        if checkpoint.is_file():
            state = rec.load_checkpoint(checkpoint, device)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            member_records = state["records"]
        rec.write_records(run_dir / rec.RECORDS, member_records)
        members.append(model)
        optimizers.append(optimizer)
        records.append(member_records)
    done = {len(r) for r in records}
    if len(done) > 1:
        raise ValueError(f"members stopped after different epochs {sorted(done)}; resume them with train_run")
    start_epoch = done.pop()
    if start_epoch:
        log(f"pack of {len(members)}: resuming after epoch {start_epoch}")
    packed = PackedCifarResNet(members).to(device)

    x_dtype = torch.bfloat16 if amp else dtype
    loaders = [DeviceLoader(data.x_train, data.y_train, c.batch_size, device=device, train=True, seed=c.seed,
                            channels_last=False, dtype=x_dtype) for c in configs_a]
    eval_loaders = {"eval_acc": DeviceLoader(data.x_eval, data.y_eval, configs_a[0].eval_batch_size, device=device,
                                             train=False, channels_last=channels_last, dtype=x_dtype)}
    if data.x_test1k is not None:
        eval_loaders["test1k_acc"] = DeviceLoader(data.x_test1k, data.y_test1k, configs_a[0].eval_batch_size,
                                                  device=device, train=False, channels_last=channels_last, dtype=x_dtype)
    first = configs_a[0]
    steps_per_epoch = len(loaders[0])
    total_steps = steps_per_epoch * first.epochs
    eager_step = _member_forward_loss(packed, configs_a, amp, device.type, memory_format)
    step_fn = torch.compile(eager_step, mode="reduce-overhead", dynamic=False) if compile else eager_step
    compiled = compile
    packed.train()
    n = len(members)
    alive = [True] * n
    finished, stopped_early = True, False
    for epoch in range(start_epoch, first.epochs):
        t0 = time.perf_counter()
        mixing = [_epoch_mixing(c, epoch, steps_per_epoch, c.batch_size, device) for c in configs_a]
        loss_sum = torch.zeros(n, dtype=torch.float64, device=device)
        correct_sum = torch.zeros(n, dtype=torch.float64, device=device)
        lr_start = [None] * n
        batch_size = first.batch_size
        no_perm = torch.zeros(batch_size, dtype=torch.int64, device=device)
        no_lam = torch.ones((), device=device)  # float32 like the mixup draws
        for step, batches in enumerate(zip(*(loader.epoch(epoch) for loader in loaders))):
            for k, (config, optimizer) in enumerate(zip(configs_a, optimizers)):
                factor = lr_factor(epoch * steps_per_epoch + step, total_steps, steps_per_epoch * config.warmup_epochs)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                lr_start[k] = config.lr * factor if lr_start[k] is None else lr_start[k]
            xs = torch.stack([x for x, _ in batches])
            ys = torch.stack([y for _, y in batches])
            perms = torch.stack([m[1][step] if m[1] is not None else no_perm for m in mixing])
            lams = torch.stack([m[0][step] if m[0] is not None else no_lam for m in mixing])
            args = (xs, ys, perms, lams)
            if compiled:
                torch.compiler.cudagraph_mark_step_begin()
                try:
                    total, losses, corrects = step_fn(*args)
                    total.backward()
                except Exception as err:  # compile is an optimisation: fall back, say so, go on
                    if epoch != start_epoch or step != 0:
                        raise
                    log(f"pack: torch.compile failed ({type(err).__name__}: {err}); training eagerly")
                    for optimizer in optimizers:
                        optimizer.zero_grad(set_to_none=True)
                    step_fn, compiled = eager_step, False
                    total, losses, corrects = step_fn(*args)
                    total.backward()
            else:
                total, losses, corrects = step_fn(*args)
                total.backward()
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += losses
            correct_sum += corrects
        train_losses = (loss_sum / steps_per_epoch).tolist()  # the epoch's one host sync
        train_accs = (correct_sum / loaders[0].num_images).tolist()
        seconds = time.perf_counter() - t0
        last = epoch + 1 == first.epochs
        packed.sync_members(steps_taken=steps_per_epoch)
        evals = {}
        if (epoch + 1) % first.eval_every == 0 or last or not all(
                math.isfinite(v) for v, a in zip(train_losses, alive) if a):
            t1 = time.perf_counter()
            evals = {key: evaluate_packed(packed, loader, amp, memory_format) for key, loader in eval_loaders.items()}
            evals["eval_seconds"] = [time.perf_counter() - t1] * n
        # The first epoch of a call carries torch.compile's warm-up: judge the deadline by the
        # latest steady epoch, and by the clock alone after the first.
        steady = seconds if epoch > start_epoch else 0.0
        stop_now = not last and (stop_after_epoch == epoch + 1 or (
            deadline is not None and time.time() + 1.5 * steady > deadline))
        for k in range(n):
            if not alive[k]:
                continue
            loss_k = train_losses[k]
            record = {"epoch": epoch + 1, "train_loss": loss_k if math.isfinite(loss_k) else None,
                      "train_acc": train_accs[k], "lr": lr_start[k], "seconds": seconds,
                      "images_per_s": loaders[0].num_images / seconds,
                      "pack_images_per_s": n * loaders[0].num_images / seconds, "packed": n}
            record.update({key: values[k] for key, values in evals.items()})
            records[k].append(record)
            rec.append_record(dirs_a[k] / rec.RECORDS, record)
            if last or stop_now or not math.isfinite(loss_k) or (epoch + 1) % checkpoint_every == 0:
                rec.atomic_torch_save(dirs_a[k] / rec.CHECKPOINT, {
                    "model": members[k].state_dict(), "optimizer": optimizers[k].state_dict(),
                    "records": records[k], "config": configs_a[k].to_dict()})
            if not math.isfinite(loss_k):
                # as train_run: a diverged run ends here. Its pack-mates are unaffected (grouped
                # convolutions, per-channel BN and per-member heads never mix members), so they go on.
                log(f"{configs_a[k].run_id}: training loss is not finite after epoch {epoch + 1}; stopping the run")
                alive[k] = False
                summaries[active[k]] = _write_summary(configs_a[k], dirs_a[k], records[k], True, compiled, amp,
                                                      channels_last, n, device)
        if not any(alive):
            break
        if stop_now:
            finished, stopped_early = False, True
            break

    for k, i in enumerate(active):
        if alive[k]:
            summaries[i] = _write_summary(configs_a[k], dirs_a[k], records[k], finished, compiled, amp,
                                          channels_last, n, device, write=not stopped_early)
    return summaries


def _write_summary(config, run_dir, records, finished, compiled, amp, channels_last, packed, device, write=True):
    summary = {**summarise(records, config.target_accuracy), "finished": finished, "run_id": config.run_id,
               "name": config.name, "seed": config.seed, "compiled": compiled, "amp": amp,
               "channels_last": channels_last, "packed": packed, "device": _device_name(device),
               "torch": torch.__version__, "python": platform.python_version()}
    if write:
        rec.atomic_write_json(run_dir / rec.SUMMARY, summary)
    return summary


def plan_packs(runs: list[RunConfig], max_pack: int) -> list[list[RunConfig]]:
    """Group ``runs`` into packs of at most ``max_pack`` members that can share a network (equal
    :func:`pack_key`), keeping the grid's order; a run that cannot be packed is a pack of one."""
    if max_pack < 1:
        raise ValueError(f"max_pack must be >= 1, got {max_pack}")
    groups: dict[tuple, list[RunConfig]] = {}
    singles: list[list[RunConfig]] = []
    for run in runs:
        if packable(run) and max_pack > 1:
            groups.setdefault(pack_key(run), []).append(run)
        else:
            singles.append([run])
    packs = [group[i:i + max_pack] for group in groups.values() for i in range(0, len(group), max_pack)]
    return packs + singles

"""Language-model pretraining scaled down (paper Sec. 4.6, appendix B.6): a BERT-style masked LM and a
GPT-style causal LM from HF ``transformers`` configurations, trained from scratch with AdamW (lr 1e-4,
weight decay 1e-2 decoupled, as B.6; biases and LayerNorm weights not decayed), IDInit (``idinit.init_``) against the model's own initialisation, with
the same seed, the same batches and (for the masked LM) the same masks.

Corpus and tokenizer: ``scripts/prepare_lm_corpus.py`` (the Python 3.11 documentation sources, byte-
level BPE of 8,192 tokens, 2.8 M tokens); the last 2% of the token file is the validation split.

Each run writes the lab's run-folder format: ``config.json``, ``records.jsonl`` (one line per
evaluation: ``step``, ``tokens``, ``flops``, ``train_loss`` (mean since the last evaluation),
``val_loss``) and ``summary.json``; :func:`write_lm_report` compares the two initialisations:
loss against tokens and FLOPs, and the FLOPs each needs to reach the default's final validation
loss (the paper's "11.3% less computation"). The folder goes through
:class:`~idinit.lab.train.RunFolder`, as every run's: locked while trained, a checkpoint at every
evaluation (model, optimiser, records, the batch generator's and the global RNG's states) that
resumes only if its checksum, configuration and idinit version match, bitwise as if never stopped.

FLOPs are counted as ``6 N + 6 L T d`` per token (Kaplan et al. 2020: forward and backward of the
``N`` multiply-accumulate parameters, the LM head included, plus attention over ``T`` positions in
``L`` layers of width ``d``); the same count for both initialisations, so their ratio is exact.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

import idinit

from ..train import records as rec
from ..train.config import ConfigRecord
from ..train.run_folder import RunFolder, global_rng_state, restore_global_rng
from ..train.step import decoupled_decay_groups
from .grid import Experiment

MODELS = ("bert", "gpt2")
INITS = ("default", "idinit")
SPECIAL = {"pad": 0, "mask": 1, "eos": 2}  # scripts/prepare_lm_corpus.py


@dataclass
class LMRunConfig(ConfigRecord):
    name: str = "gpt2-idinit"
    model: str = "gpt2"
    init: str = "idinit"
    layers: int = 4
    width: int = 256
    heads: int = 4
    ff: int = 1024
    seq_len: int = 128
    batch_size: int = 64
    steps: int = 3000
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 0              # B.6 states none
    mask_prob: float = 0.15            # BERT's 15%, of which 80% <mask>, 10% random, 10% kept
    eval_every: int = 100
    eval_batches: int = 16
    seed: int = 0
    tokens_path: str = ".data/lm/tokens.u16.npy"
    val_fraction: float = 0.02

    def __post_init__(self):
        if self.model not in MODELS or self.init not in INITS:
            raise ValueError(f"model must be one of {MODELS} and init one of {INITS}; got {self.model!r}, {self.init!r}")
        for key in ("layers", "width", "heads", "ff", "seq_len", "batch_size", "steps", "eval_every", "eval_batches"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if not 0 < self.val_fraction < 1 or not 0 < self.mask_prob < 1:
            raise ValueError("val_fraction and mask_prob must be in (0, 1)")

    # the interface the experiment runner uses for configurations of other tasks
    TASK = "lm"  # not a field: no annotation

    def to_dict(self) -> dict:
        return {"task": self.TASK, **dataclasses.asdict(self)}


    @property
    def epochs(self) -> int:  # evaluations, for the runner's progress lines
        return math.ceil(self.steps / self.eval_every)

    def data_key(self) -> tuple:
        return ("lm", self.tokens_path)

    def load_data(self, data_dir=None) -> np.ndarray:
        return load_tokens(self.tokens_path)

    def train(self, run_dir, **kwargs) -> dict:
        return train_lm_run(self, run_dir, **kwargs)


def load_tokens(path) -> np.ndarray:
    """The uint16 token file (``np.load(..., allow_pickle=False)``); a clear error if it is missing."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist; make it with "
                                "scripts/prepare_lm_corpus.py (see its docstring)")
    tokens = np.load(path, allow_pickle=False)
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise ValueError(f"{path}: expected a 1-d uint16 array, got {tokens.dtype} {tokens.shape}")
    return tokens


def build_lm(config: LMRunConfig, vocab_size: int) -> torch.nn.Module:
    """The HF model of ``config`` (built under ``torch.manual_seed(config.seed)``: its own init), then
    ``idinit.init_`` for IDInit (roles from the HF model's ``dummy_inputs``)."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    if config.model == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=vocab_size, hidden_size=config.width,
                                           num_hidden_layers=config.layers, num_attention_heads=config.heads,
                                           intermediate_size=config.ff, max_position_embeddings=config.seq_len,
                                           pad_token_id=SPECIAL["pad"]))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=config.width, n_layer=config.layers,
                                           n_head=config.heads, n_inner=config.ff, n_positions=config.seq_len,
                                           bos_token_id=SPECIAL["eos"], eos_token_id=SPECIAL["eos"]))
    if config.init == "idinit":
        idinit.init_(model, scheme="idinit", generator=torch.Generator().manual_seed(config.seed))
    return model


def flops_per_token(model: torch.nn.Module, config: LMRunConfig) -> float:
    """``6 N + 6 L T d`` (module docstring); ``N`` counts every matrix a token multiplies: the
    ``nn.Linear`` layers (the tied LM head once, as its own ``nn.Linear``) and GPT-2's ``Conv1D``;
    embedding tables are looked up, not multiplied."""
    matrices = sum(m.weight.numel() for m in model.modules()
                   if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
    return 6.0 * matrices + 6.0 * config.layers * config.seq_len * config.width


def _batch_starts(generator: torch.Generator, high: int, batch: int) -> torch.Tensor:
    return torch.randint(0, high, (batch,), generator=generator)


def _mask(ids: torch.Tensor, config: LMRunConfig, vocab_size: int, generator: torch.Generator):
    """BERT's masking: ``mask_prob`` of the positions are predicted; of those 80% become ``<mask>``,
    10% a random token, 10% stay. Labels are -100 elsewhere."""
    pick = torch.rand(ids.shape, generator=generator) < config.mask_prob
    roll = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(3, vocab_size, ids.shape, generator=generator)
    inputs = torch.where(pick & (roll < 0.8), torch.full_like(ids, SPECIAL["mask"]), ids)
    inputs = torch.where(pick & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    return inputs, labels


def _make_batch(tokens: torch.Tensor, starts: torch.Tensor, config: LMRunConfig, vocab_size: int, generator):
    ids = torch.stack([tokens[s:s + config.seq_len] for s in starts.tolist()]).long()
    if config.model == "bert":
        return _mask(ids, config, vocab_size, generator)
    return ids, ids  # HF shifts the labels of a causal LM itself


def _loss(model, inputs, labels, device, amp: bool) -> torch.Tensor:
    with torch.autocast(device.type, torch.bfloat16, enabled=amp):
        return model(input_ids=inputs.to(device, non_blocking=True), labels=labels.to(device, non_blocking=True)).loss


def train_lm_run(config: LMRunConfig, run_dir, *, device="cpu", data: np.ndarray | None = None, data_dir=None,
                 deadline: float | None = None, log=print, compile: bool | None = None, amp: bool | None = None,
                 checkpoint_every: int = 1, stop_after_epoch: int | None = None) -> dict:
    """Train ``config`` in ``run_dir`` (skipped when its summary says finished, resumed from its
    checkpoint if it has one); return the summary.

    ``data``: the token array (else read from ``config.tokens_path``). ``amp``: bf16 autocast (default:
    on CUDA only). The batches (and masks) come from generators seeded by ``config.seed`` alone, so both
    inits see the same ones. A checkpoint is written at every ``checkpoint_every``-th evaluation and at the end;
    ``deadline`` (a ``time.time()`` value) or ``stop_after_epoch`` (a count of evaluations after the
    first) end the call after a checkpoint, unfinished. ``compile`` is accepted for the runner and unused."""
    device = torch.device(device)
    folder = RunFolder(run_dir, config)
    with folder.held(log) as done:
        if done is not None:  # finished earlier
            return done
        amp = device.type == "cuda" if amp is None else amp
        return _train_lm(config, folder, device, data, deadline, log, amp, checkpoint_every, stop_after_epoch)


def _train_lm(config, folder, device, data, deadline, log, amp, checkpoint_every, stop_after_epoch) -> dict:
    tokens = torch.from_numpy((load_tokens(config.tokens_path) if data is None else data).astype(np.int32))
    split = int(len(tokens) * (1 - config.val_fraction))
    train_tokens, val_tokens = tokens[:split], tokens[split:]
    if len(val_tokens) <= config.seq_len or len(train_tokens) <= config.seq_len:
        raise ValueError(f"{len(tokens)} tokens are too few for seq_len {config.seq_len} and val_fraction "
                         f"{config.val_fraction}")
    vocab_size = max(int(tokens.max()) + 1, len(SPECIAL) + 1)
    model = build_lm(config, vocab_size).to(device)
    per_token = flops_per_token(model, config)
    optimizer = torch.optim.AdamW(decoupled_decay_groups([{"params": list(model.parameters())}], config.weight_decay),
                                  lr=config.lr, **({"fused": True} if device.type == "cuda" else {}))
    # validation batches and masks fixed once, the same for every run of this seed
    val_gen = torch.Generator().manual_seed(10_000 + config.seed)
    val_batches = [_make_batch(val_tokens, _batch_starts(val_gen, len(val_tokens) - config.seq_len, config.batch_size),
                               config, vocab_size, val_gen) for _ in range(config.eval_batches)]
    train_gen = torch.Generator().manual_seed(config.seed)
    records = folder.resume(model, optimizer, device)
    if records:
        train_gen.set_state(folder.extra["train_gen"])
        restore_global_rng(folder.extra["rng"], device)
        log(f"{config.run_id}: resuming after step {records[-1]['step']}")

    @torch.no_grad()
    def validate() -> float:
        model.eval()
        losses = [float(_loss(model, x, y, device, amp)) for x, y in val_batches]
        model.train()
        return sum(losses) / len(losses)

    def checkpoint() -> None:
        folder.save_checkpoint(model, optimizer, records, {"train_gen": train_gen.get_state(),
                                                           "rng": global_rng_state(device)})

    finished, losses = True, []
    if not records:
        first = {"epoch": 0, "step": 0, "tokens": 0, "flops": 0.0, "train_loss": None, "val_loss": validate(),
                 "seconds": 0.0}
        records.append(first)
        folder.append(first)
        checkpoint()
    t0 = time.perf_counter() - records[-1]["seconds"]  # "seconds" counts training time over all calls
    model.train()
    for step in range(records[-1]["step"] + 1, config.steps + 1):
        inputs, labels = _make_batch(train_tokens, _batch_starts(train_gen, len(train_tokens) - config.seq_len,
                                                                  config.batch_size), config, vocab_size, train_gen)
        if config.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * min(1.0, step / config.warmup_steps)
        loss = _loss(model, inputs, labels, device, amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if step % config.eval_every == 0 or step == config.steps:
            train_loss = float(torch.stack(losses).float().mean())
            losses = []
            tokens_seen = step * config.batch_size * config.seq_len
            record = {"epoch": len(records), "step": step, "tokens": tokens_seen, "flops": per_token * tokens_seen,
                      "train_loss": train_loss if math.isfinite(train_loss) else None, "val_loss": validate(),
                      "seconds": time.perf_counter() - t0}
            records.append(record)
            folder.append(record)
            diverged = not math.isfinite(train_loss)
            stop = step < config.steps and (stop_after_epoch == record["epoch"]
                                            or (deadline is not None and time.time() > deadline))
            if step == config.steps or stop or diverged or record["epoch"] % checkpoint_every == 0:
                checkpoint()
            if diverged:
                log(f"{config.run_id}: loss is not finite at step {step}; stopping")
                break
            if stop:
                finished = False
                break
    summary = {"finished": finished, "run_id": config.run_id, "name": config.name, "seed": config.seed,
               "steps": records[-1]["step"], "tokens": records[-1]["tokens"], "flops": records[-1]["flops"],
               "flops_per_token": per_token, "final_val_loss": records[-1]["val_loss"],
               "final_train_loss": records[-1]["train_loss"], "parameters": sum(p.numel() for p in model.parameters()),
               "train_seconds": records[-1]["seconds"], "amp_bf16": amp,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
               "torch": torch.__version__, "python": platform.python_version(),
               # fields `idinit report` reads for every run folder
               "epochs": records[-1]["epoch"], "final_eval_acc": None, "epochs_to_target": None, "diverged":
                   any(r["train_loss"] is None for r in records[1:])}
    if finished:
        folder.finish(summary)
    return summary


def lm_pretrain() -> Experiment:
    """Both models x both inits, one seed; about a minute a run on one H200 (our estimate)."""
    from .task_grid import TaskExperiment

    configs = [LMRunConfig(name=f"{model}-{init}", model=model, init=init) for model in MODELS for init in INITS]
    return TaskExperiment(
        name="lm-pretrain", version=1,
        description="Sec. 4.6 / B.6 scaled down: BERT-style masked LM and GPT-2-style causal LM (4 layers, width 256), "
                    "AdamW 1e-4 wd 1e-2, IDInit vs the model's own init, Python 3.11 docs (2.8 M BPE tokens)",
        configs=configs, seeds=(0,),
        notes=["Paper: BERT-Base on Wikipedia + Toronto Books, 40 epochs, batch 768, 32 V100; IDInit reached the "
               "default's loss with 11.3% less computation and ended at 1.46.",
               "Here: 4 layers, width 256, 4 heads, MLP 1024, sequences of 128, batch 64, 3,000 steps (24.6 M tokens, "
               "about 9 passes over the 2.76 M training tokens), constant lr, bf16 autocast on CUDA.",
               "Tokenizer: byte-level BPE of 8,192 tokens trained on the corpus (scripts/prepare_lm_corpus.py)."])


def _reach(records: list[dict], target: float, key: str = "flops") -> float | None:
    """``key`` at which the validation loss first reaches ``target`` (linear between evaluations)."""
    for before, after in zip(records, records[1:]):
        if after["val_loss"] is not None and after["val_loss"] <= target:
            if before["val_loss"] is None or before["val_loss"] == after["val_loss"]:
                return after[key]
            frac = (before["val_loss"] - target) / (before["val_loss"] - after["val_loss"])
            return before[key] + max(0.0, min(1.0, frac)) * (after[key] - before[key])
    return None


def write_lm_report(run_dir, out_dir=None) -> pathlib.Path:
    """``report.md`` and ``loss.png``: validation loss against tokens and FLOPs per model, and the
    FLOPs IDInit needs to reach the default's final validation loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = pathlib.Path(run_dir)
    out_dir = pathlib.Path(out_dir) if out_dir else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for config_path in sorted(run_dir.glob("*/seed*/" + rec.CONFIG)):
        config = rec.read_json(config_path)
        if config.get("task") != "lm":
            continue
        runs[(config["model"], config["init"], config["seed"])] = (
            config, rec.read_records(config_path.parent / rec.RECORDS),
            rec.read_json(config_path.parent / rec.SUMMARY) if (config_path.parent / rec.SUMMARY).is_file() else None)
    if not runs:
        raise FileNotFoundError(f"no language-model runs under {str(run_dir)!r}")
    meta = rec.read_json(run_dir / "experiment.json") if (run_dir / "experiment.json").is_file() else {}
    lines = ["# Language-model pretraining, scaled down (paper Sec. 4.6 / B.6)", "", meta.get("description", ""), ""]
    for call in meta.get("calls", []):
        lines.append(f"- `{call.get('command')}` on {call.get('machine')}, started {call.get('started')}")
    lines += ["", "| model | init | seed | finished | steps | tokens | final train loss | final val loss | "
              "FLOPs to the default's final val loss | vs default | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    models = sorted({k[0] for k in runs})
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
    for col, model in enumerate(models):
        for (m, init, seed), (config, records, summary) in sorted(runs.items()):
            if m != model:
                continue
            default = runs.get((model, "default", seed))
            target = default[1][-1]["val_loss"] if default and default[1] else None
            reach = _reach(records, target) if target is not None else None
            reach_default = _reach(default[1], target) if target is not None else None
            ratio = f"{reach / reach_default:.3f}x" if reach is not None and reach_default else "—"
            last = records[-1] if records else {}
            fmt = lambda v, f: "—" if v is None else format(v, f)
            lines.append(f"| {model} | {init} | {seed} | {bool(summary and summary.get('finished'))} | "
                         f"{last.get('step', 0)} | {last.get('tokens', 0):,} | {fmt(last.get('train_loss'), '.4f')} | "
                         f"{fmt(last.get('val_loss'), '.4f')} | {fmt(reach, '.3e')} | {ratio} | "
                         f"{fmt(last.get('seconds'), '.0f')} |")
            for row, key in enumerate(("tokens", "flops")):
                axes[row][col].plot([r[key] for r in records], [r["val_loss"] for r in records], label=f"{init} (val)")
                axes[row][col].plot([r[key] for r in records[1:]], [r["train_loss"] for r in records[1:]], ls=":",
                                    label=f"{init} (train, mean since last eval)")
        for row, key in enumerate(("tokens", "FLOPs")):
            axes[row][col].set(title=model, xlabel=key, ylabel="loss")
            axes[row][col].grid(alpha=0.3)
            axes[row][col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=110)
    plt.close(fig)
    lines += ["| paper: BERT-Base, Wikipedia + Toronto Books (Sec. 4.6, Fig. 8) | IDInit | — | — | — | — | "
              "1.46 (split not stated) | — | — | 0.887x (11.3% less) | — |",
              "", "\"vs default\": the FLOPs this run needs to reach the default run's final validation loss, over the "
              "default's own (1.000x); the paper reports 0.887x (11.3% less) for BERT-Base.", "",
              "![loss](loss.png)", ""]
    if meta.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    path = out_dir / "report.md"
    rec.atomic_write_bytes(path, "\n".join(lines).encode())
    return path

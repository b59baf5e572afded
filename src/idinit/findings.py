"""What :func:`idinit.check` measured: per-layer, per-block and per-output statistics, the flags, and
the :class:`Report` that holds them (a table when printed, ``to_dict()`` for JSON, ``plot()`` for a PNG).
The measuring is in :mod:`idinit.check`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from idinit.roles import BRANCH_END_ROLES, is_bias_name

__all__ = ["Flag", "LayerStat", "BlockStat", "OutputStat", "Report", "FLAG_KINDS", "NEAR_ZERO_GAIN", "OPEN_BRANCH",
           "REOPEN_GROWTH", "STARVED_SHARE", "format_value"]

FLAG_KINDS = ("dead_output", "starved_branch", "stacked_near_zero_gains", "reopened_branch", "exploding", "vanishing",
              "non_finite", "overwritten_prior")
# A layer whose output RMS is below this fraction of its input's closes a branch the way IDIZ
# (1e-6, paper Sec. 3.2), exact zeros or a tiny layer scale do.
NEAR_ZERO_GAIN = 1e-3
# A branch whose end layer is near zero, which grows more than REOPEN_GROWTH-fold after it and still
# adds at least OPEN_BRANCH of its skip, has been re-opened by what follows the end. Measured after
# idinit (zoo audit, results/zoo-audit): a batch norm after IDIZ leaves ~3e-4 of the skip (BN ResNets),
# Gemma's post-norms ~0.011, GLM-4's RMSNorm (eps 1.6e-7) 0.17-0.22.
OPEN_BRANCH, REOPEN_GROWTH = 0.1, 10.0
# The roles whose near-zero output is meant to close a branch: an end layer, its norm, a layer scale or gate
CLOSING_ROLES = BRANCH_END_ROLES + ("branch_end_norm", "scale")
# A layer is starved when the input channels its weights read hold less than this share of its
# input's energy (results/idic-reads-padding: 1e-12 behind option-A shortcuts, ~1 otherwise).
STARVED_SHARE = 1e-6
# Activation RMS beyond these multiples of the first layer's input RMS explodes / vanishes.
EXPLODING, VANISHING = 1e3, 1e-3
# An output below this multiple of the first layer's input RMS is dead: one near-zero factor (an
# IDIZ head, ~1e-6) is by design, two stacked (~1e-12) or exact zeros are not. An output below
# DEAD_SIBLING times its largest sibling (pyramid levels) is dead too.
DEAD_OUTPUT, DEAD_SIBLING = 1e-9, 1e-4


@dataclass
class Flag:
    """One finding: ``kind`` (one of :data:`FLAG_KINDS`), the parameter / module ``names`` it is
    about, what was measured (``message``) and what to do (``remedy``)."""

    kind: str
    names: list[str]
    message: str
    remedy: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}\n    remedy: {self.remedy}"


@dataclass
class LayerStat:
    name: str                     # module name; "#2" etc. for a module's second call
    type: str
    role: str = ""                # from idinit.plan ("activation" for ReLU-family calls)
    rms_in: float | None = None
    rms_out: float | None = None
    dead: float | None = None     # share of channels never positive (activations)
    reads: float | None = None    # share of its input energy on the channels its weights read
    grad_norm: float | None = None
    params: list[str] = field(default_factory=list)
    small: bool = False           # inside a branch opened by a near-zero layer (small by design)
    table: bool = False           # called with no tensor: its output is a parameter table (a position bias)

    @property
    def gain(self) -> float | None:
        if self.rms_in is None or self.rms_out is None or self.rms_in == 0:
            return None
        return self.rms_out / self.rms_in

    @property
    def near_zero(self) -> bool:
        """Its output is ~0 by its own doing: a gain below NEAR_ZERO_GAIN, or starved."""
        gain = self.gain
        return (gain is not None and gain < NEAR_ZERO_GAIN) or (self.reads is not None and self.reads < STARVED_SHARE)


@dataclass
class BlockStat:
    name: str              # the module in which the residual add ran
    branch_end: str        # the layer whose output the branch carries
    skip_rms: float
    branch_rms: float
    distance: float        # |out - skip| / |skip| = |branch| / |skip|
    after_end: list[str] = field(default_factory=list)  # parameters the branch met after its end layer


def _end_weight(source: LayerStat) -> str:
    """The parameter a flag names for a branch's end layer: its weight, else the layer."""
    return next((p for p in source.params if p.endswith("weight")), source.name)


def reopened_branch_flag(block: BlockStat, source: LayerStat, params: Mapping[str, Any]) -> Flag | None:
    """``reopened_branch`` for one residual block, or None: its end layer ``source``, planned to close the
    branch, has a near-zero gain, yet between it and the add the branch grows more than REOPEN_GROWTH-fold
    and adds OPEN_BRANCH or more of the skip. Causes met in the zoo audit: a normalising post-norm dividing
    IDIZ's ~1e-6 output by its own RMS (GLM-4), a second path joining the branch before the add (XCiT's
    class-attention blocks add the normed patch tokens)."""
    gain = source.gain
    if (source.role not in CLOSING_ROLES or gain is None or gain >= NEAR_ZERO_GAIN or not source.rms_out
            or block.branch_rms < REOPEN_GROWTH * source.rms_out or block.distance < OPEN_BRANCH):
        return None
    end = _end_weight(source)
    scales = [p for p in block.after_end if params[p].dim() <= 1 and not is_bias_name(p.rpartition(".")[2])]
    through = f" (it meets {', '.join(scales)} after the end)" if scales else ""
    return Flag("reopened_branch", [end, *scales],
                f"the branch of {block.name or 'the model'} is closed at {source.name} (gain {gain:.2g}) but grows "
                f"{block.branch_rms / source.rms_out:.3g}-fold before the add{through}: it adds {block.distance:.2g} "
                "of the skip at init",
                "if a normalising layer between the end and the add rescales it (a post-norm), start that norm at its "
                f"zero scale and give {end} an identity init, one factor closing the branch (idinit.init_(..., "
                f"branch_end_norm='zero', overrides={{{end!r}: 'identity'}})); if another path joins the branch "
                "before the add, state the block's real branch end (overrides=) or accept it open")


def stacked_gains_flag(block: BlockStat, source: LayerStat, params: Mapping[str, Any],
                       grads: Mapping[str, float]) -> Flag | None:
    """``stacked_near_zero_gains`` for one residual block, or None: its end layer ``source`` has a
    near-zero gain and what follows it another. The scales named are the near-zero multipliers met
    after the end (a layer scale, a gate, a norm weight); a bias is none: zero biases after the end
    (StarNet's convolutions and norms) close nothing and are not named (zoo audit)."""
    gain = source.gain
    post = block.branch_rms / source.rms_out if source.rms_out else None
    if gain is None or gain >= NEAR_ZERO_GAIN or post is None or post >= NEAR_ZERO_GAIN:
        return None
    end = _end_weight(source)
    scales = [p for p in block.after_end if params[p].dim() <= 1 and not is_bias_name(p.rpartition(".")[2])
              and params[p].detach().abs().max() < NEAR_ZERO_GAIN]
    named = ", ".join(scales)
    return Flag("stacked_near_zero_gains", [end, *scales],
                f"the branch of {block.name or 'the model'} is closed twice: {source.name} has gain {gain:.2g} and "
                f"{named or 'what follows it'} another {post:.2g} (branch/skip {block.distance:.2g}; gradient of "
                f"{end}: {format_value(grads.get(end))})",
                f"one zero-preserving factor is enough: keep {named or 'the scale'} and give {end} an identity init "
                f"(overrides={{{end!r}: 'identity'}}), or set the scale to 1")


@dataclass
class OutputStat:
    name: str
    shape: list[int]
    rms: float
    behind: list[str] = field(default_factory=list)  # near-zero layers no residual add closed before it


class Report:
    """What :func:`check` measured; ``flags`` lists the findings (empty: nothing found)."""

    def __init__(self, model_name: str, train: bool, layers, blocks, outputs, flags, notes):
        self.model_name, self.train = model_name, train
        self.layers: list[LayerStat] = layers
        self.blocks: list[BlockStat] = blocks
        self.outputs: list[OutputStat] = outputs
        self.flags: list[Flag] = flags
        self.notes: list[str] = notes

    def flagged(self, kind: str) -> list[Flag]:
        if kind not in FLAG_KINDS:
            raise ValueError(f"unknown flag kind {kind!r}; kinds are {', '.join(FLAG_KINDS)}")
        return [f for f in self.flags if f.kind == kind]

    def to_dict(self) -> dict:
        return {"model": self.model_name, "mode": "train" if self.train else "eval",
                "layers": [{**asdict(s), "gain": s.gain} for s in self.layers],
                "blocks": [asdict(b) for b in self.blocks], "outputs": [asdict(o) for o in self.outputs],
                "flags": [asdict(f) for f in self.flags], "notes": list(self.notes)}

    def __repr__(self) -> str:
        return (f"<Report for {self.model_name}: {len(self.layers)} layers, {len(self.blocks)} blocks, "
                f"{len(self.flags)} flags>")

    def __str__(self) -> str:
        lines = [f"{self.model_name}: one forward and backward pass in {'train' if self.train else 'eval'} mode"]
        v = format_value
        rows = [("layer", "type", "role", "rms in", "rms out", "dead", "reads", "grad norm")]
        for s in self.layers:
            rows.append((s.name, s.type, s.role, v(s.rms_in), v(s.rms_out), _pct(s.dead), v(s.reads), v(s.grad_norm)))
        lines += _table(rows)
        if self.blocks:
            lines.append("")
            rows = [("residual block", "branch end", "|skip| rms", "|branch| rms", "distance")]
            rows += [(b.name, b.branch_end, v(b.skip_rms), v(b.branch_rms), v(b.distance)) for b in self.blocks]
            lines += _table(rows)
        lines.append("")
        lines += [f"output {o.name} {'x'.join(map(str, o.shape))}: rms {v(o.rms)}" for o in self.outputs]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"{len(self.flags)} flag(s)" + (":" if self.flags else ": nothing found"))
        lines += [str(f) for f in self.flags]
        return "\n".join(line.rstrip() for line in lines)

    def plot(self, path) -> None:
        """Write a PNG: activation RMS and gradient norm per layer (log scale, in execution order) and
        each residual block's distance. Needs matplotlib (``pip install "idinit[lab]"``)."""
        try:
            import matplotlib
        except ImportError as err:
            raise ImportError('Report.plot needs matplotlib: pip install "idinit[lab]"') from err
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 1, figsize=(11, 7), constrained_layout=True)
        for key, label in (("rms_out", "activation RMS"), ("grad_norm", "gradient norm")):
            points = [(i, getattr(s, key)) for i, s in enumerate(self.layers) if getattr(s, key)]
            if points:
                axes[0].semilogy(*zip(*points), ".", label=label)
        for f in self.flags:
            hits = [i for i, s in enumerate(self.layers) if s.name in f.names or any(n.startswith(s.name + ".")
                                                                                   for n in f.names)]
            for i in hits[:1]:
                axes[0].axvline(i, color="red", alpha=0.3)
        axes[0].set(xlabel="layer (execution order)", title=f"{self.model_name}: {len(self.flags)} flag(s) (red lines)")
        axes[0].legend()
        if self.blocks:
            axes[1].semilogy([max(b.distance, 1e-30) for b in self.blocks], "o-")
        axes[1].set(xlabel="residual block (execution order)", ylabel="|branch| / |skip|")
        fig.savefig(path, dpi=100)
        plt.close(fig)


def format_value(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _table(rows) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]

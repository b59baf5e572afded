"""The body of tests/test_sharded.py, run in every process of a gloo group (imported by the spawned children).

Each check initialises a DTensor (or an FSDP2-sharded model) shard by shard and compares the gathered
result with the same initialisation of the unsharded tensor, bit for bit (loose noise included).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

import idinit

FNS = {
    "identity_": lambda t, g: idinit.identity_(t, gain=math.sqrt(2.0), loose=1e-3, generator=g),
    "channel_identity_": lambda t, g: idinit.channel_identity_(t, loose=1e-3, generator=g),
    "zero_preserving_": lambda t, g: idinit.zero_preserving_(t, eps=1e-3),
    "hadamard_": lambda t, g: idinit.hadamard_(t),
}
# tall, wide, uneven, 1 column, conv2d (square / tall), conv1d, depthwise
SHAPES = [(12, 8), (8, 12), (10, 7), (9, 1), (6, 4, 3, 3), (40, 2, 3, 3), (7, 5, 3), (5, 1, 3, 3)]


def _unsharded(fn, shape, dtype, seed):
    return FNS[fn](torch.full(shape, float("nan"), dtype=dtype), torch.Generator().manual_seed(seed))


def check_tensors(mesh, placement_sets) -> int:
    """Every public initialiser on every shape and placement: gathered == unsharded. Returns the count."""
    count = 0
    for placements in placement_sets:
        for shape in SHAPES:
            for fn in FNS:
                for dtype in (torch.float32, torch.float64) if fn == "identity_" else (torch.float32,):
                    dt = distribute_tensor(torch.full(shape, float("nan"), dtype=dtype), mesh, placements)
                    before = dt.to_local().data_ptr()
                    assert FNS[fn](dt, torch.Generator().manual_seed(5)) is dt
                    assert dt.to_local().data_ptr() == before  # written in place
                    got, want = dt.full_tensor(), _unsharded(fn, shape, dtype, 5)
                    assert torch.equal(got, want), (fn, shape, placements, dtype, got, want)
                    count += 1
    # the noise is there (it is what could differ between shardings)
    noisy = _unsharded("identity_", (12, 8), torch.float64, 5)
    assert (noisy[noisy != 0] - math.sqrt(2.0)).abs().max() > 1e-5
    return count


class Block(nn.Module):
    """A residual block with a fused attention projection (3 row blocks) and a tall MLP."""

    def __init__(self, d=8):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.up = nn.Linear(d, 3 * d)
        self.down = nn.Linear(3 * d, d)

    def forward(self, x):
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.down(torch.relu(self.up(x)))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.conv(torch.relu(x))
        return self.head(x.mean((2, 3)))


def check_fsdp(mesh) -> None:
    """FSDP2 (fully_shard, Shard(0) on every parameter): Plan.apply on the sharded model == unsharded."""
    from torch.distributed.fsdp import fully_shard

    for make, inputs in ((lambda: nn.Sequential(Block(), Block()), (torch.randn(2, 5, 8),)),
                         (ConvNet, (torch.randn(2, 3, 8, 8),))):
        torch.manual_seed(0)
        model = make()
        plan = idinit.plan(model, example_inputs=inputs)
        reference = copy.deepcopy(model)
        plan.apply(reference, generator=torch.Generator().manual_seed(9))
        for module in model.modules():
            if isinstance(module, (Block, nn.Conv2d)):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        pointers = {n: p.to_local().data_ptr() for n, p in model.named_parameters()}
        plan.apply(model, generator=torch.Generator().manual_seed(9))
        for (name, p), want in zip(model.named_parameters(), reference.parameters()):
            assert p.to_local().data_ptr() == pointers[name], name
            assert torch.equal(p.full_tensor(), want), name


class TinyLM(nn.Module):
    """An embedding (the model's own init draws it), two residual blocks, a head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(8, 11)

    def forward(self, tokens):
        return self.head(self.blocks(self.embed(tokens)))


def _meta_model(mesh=None) -> TinyLM:
    """TinyLM built on the meta device, sharded with fully_shard first when ``mesh`` is given, materialised."""
    from torch.distributed.fsdp import fully_shard

    with torch.device("meta"):
        model = TinyLM()
    if mesh is not None:
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model.to_empty(device="cpu")


def check_init_after_fully_shard(mesh) -> None:
    """``init_`` on a model sharded on the meta device (the memory-saving FSDP2 order): each rank writes
    its shards in place, and the gathered model equals ``init_`` of the unsharded model bit for bit: the
    embedding drawn by the model's own init, Kaiming draws, the loose noise."""
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    for scheme in ("idinit", "kaiming"):
        reference = _meta_model()
        want_plan = idinit.init_(reference, scheme, example_inputs=(tokens,), keep_model_values=False,
                                 generator=torch.Generator().manual_seed(3))
        model = _meta_model(mesh)
        pointers = {n: p.to_local().data_ptr() for n, p in model.named_parameters()}
        plan = idinit.init_(model, scheme, example_inputs=(tokens,), keep_model_values=False,
                            generator=torch.Generator().manual_seed(3))
        assert [(e.name, e.role, e.init) for e in plan] == [(e.name, e.role, e.init) for e in want_plan]
        assert plan["embed.weight"].init == "reset_parameters"
        for (name, p), want in zip(model.named_parameters(), reference.parameters()):
            assert p.to_local().data_ptr() == pointers[name], name  # in place, still sharded
            assert torch.equal(p.full_tensor(), want), (scheme, name)
        # what the equality guards against: a draw on each rank's shard is not the unsharded draw
        assert 0.5 < reference.embed.weight.std() < 2.0  # nn.Embedding's N(0, 1)
        torch.manual_seed(0)
        local_draw = nn.init.normal_(model.embed.weight.detach().clone()).full_tensor()
        torch.manual_seed(0)
        assert not torch.equal(local_draw, nn.init.normal_(torch.empty(11, 8)))
    # the model still trains (FSDP's hooks are back after planning)
    loss = model(tokens).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def check_column_sharded_model(mesh) -> None:
    """Tensor-parallel style: a Linear weight Shard(1), a conv kernel Shard(1), a replicated one."""
    torch.manual_seed(0)
    model = ConvNet()
    plan = idinit.plan(model, example_inputs=(torch.randn(2, 3, 8, 8),))
    reference = copy.deepcopy(model)
    plan.apply(reference, generator=torch.Generator().manual_seed(4))
    for module, placement in ((model.stem, Shard(1)), (model.conv, Shard(1)), (model.head, Replicate())):
        for name, p in list(module.named_parameters()):
            chosen = placement if p.dim() > 1 else Replicate()
            setattr(module, name, nn.Parameter(distribute_tensor(p.detach(), mesh, [chosen])))
    plan.apply(model, generator=torch.Generator().manual_seed(4))
    for (name, p), want in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p.full_tensor(), want), name


def _apply_sharded_and_whole(reference: nn.Module, plan, names, mesh, placement) -> None:
    """Apply ``plan`` to ``reference`` and to a copy whose ``names`` are NaN DTensors with ``placement``: the
    shards are written in place and gather to the unsharded result bit for bit."""
    sharded = copy.deepcopy(reference)
    for name in names:
        nan = torch.full(getattr(reference, name).shape, float("nan"))
        setattr(sharded, name, nn.Parameter(distribute_tensor(nan, mesh, [placement])))
    local = {name: getattr(sharded, name).to_local().data_ptr() for name in names}
    plan.apply(reference, generator=torch.Generator().manual_seed(1))
    plan.apply(sharded, generator=torch.Generator().manual_seed(1))
    for name in names:
        assert getattr(sharded, name).to_local().data_ptr() == local[name], name  # in place
        assert torch.equal(getattr(sharded, name).full_tensor(), getattr(reference, name)), (plan.scheme, name)


def _refused(model: nn.Module, plan, name: str, value: torch.Tensor, mesh, placement, *messages: str) -> None:
    """``plan.apply`` on ``model`` with ``name`` a DTensor of ``value`` sharded with ``placement`` raises a
    ValueError holding ``messages`` before it writes anything (the stem and the shards keep their values)."""
    setattr(model, name, nn.Parameter(distribute_tensor(value, mesh, [placement])))
    stem, local = model.stem.weight.detach().clone(), getattr(model, name).to_local().clone()
    try:
        plan.apply(model)
    except ValueError as e:
        assert all(m in str(e) for m in messages), e
    else:
        raise AssertionError(f"{name} with {placement} was accepted")
    assert torch.equal(model.stem.weight, stem) and torch.equal(getattr(model, name).to_local(), local)


class _FusedExperts(nn.Module):
    """A residual branch of three experts held in (experts, out, in) parameters, as transformers 5 fuses them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.up = nn.Parameter(torch.randn(3, 6, 4))
        self.down = nn.Parameter(torch.randn(3, 4, 6))

    def forward(self, x):
        h = self.stem(x)
        return h + sum(nn.functional.linear(torch.relu(nn.functional.linear(h, self.up[e])), self.down[e])
                       for e in range(3))


def check_sharded_experts(mesh) -> None:
    """Stacks of experts sharded along their experts (FSDP2's dim 0; uneven and empty shards on 4 ranks)
    are written expert by expert in place, equal bit for bit to the unsharded result (IDI's loose noise,
    IDIZ, Kaiming's per-expert draws); a stack cut inside its matrices is refused before anything is
    written."""
    for scheme in ("idinit", "kaiming"):
        reference = _FusedExperts()
        plan = idinit.plan(reference, scheme, example_inputs=(torch.randn(3, 4),))
        assert plan["up"].layout == "stacked" and plan["down"].layout == "stacked", plan
        _apply_sharded_and_whole(reference, plan, ("up", "down"), mesh, Shard(0))
    model = _FusedExperts()
    plan = idinit.plan(model, example_inputs=(torch.randn(3, 4),))
    _refused(model, plan, "down", torch.full((3, 4, 6), 7.0), mesh, Shard(1),
             "down: a stack of shape (3, 4, 6)", "only Shard(0)")


class _EinsumBranch(nn.Module):
    """A residual branch whose two projections are raw (d, heads, head_dim) parameters read through einsum, as
    HF XLNet's attention: ``q`` as (heads * head_dim, d), ``o`` as (d, heads * head_dim)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.q = nn.Parameter(torch.randn(6, 2, 5))
        self.o = nn.Parameter(torch.randn(6, 2, 5))

    def forward(self, x):
        h = self.stem(x)
        return h + torch.einsum("bnd,hnd->bh", torch.relu(torch.einsum("bh,hnd->bnd", h, self.q)), self.o)


def check_sharded_contracted(mesh) -> None:
    """Parameters read as one matrix through einsum, sharded along their first axis (FSDP2's dim 0, the
    matrix's columns for ``q``, its rows for ``o``; uneven and empty shards on 4 ranks) or along the
    first axis of their second run (Shard(1), 2 heads on 2 ranks): written in place, equal bit for bit to the
    unsharded result; a shard cutting the last axis, or cutting 2 heads unevenly (4 ranks: DTensor cannot
    flatten it in place), is refused before anything is written."""
    even = [("idinit", Shard(1))] if mesh.size() == 2 else []
    for scheme, placement in [("idinit", Shard(0)), ("kaiming", Shard(0))] + even:
        reference = _EinsumBranch()
        plan = idinit.plan(reference, scheme, example_inputs=(torch.randn(3, 4),))
        assert (plan["q"].layout, plan["o"].layout) == ("matrix1_t", "matrix1"), plan
        _apply_sharded_and_whole(reference, plan, ("q", "o"), mesh, placement)
    refused = [(Shard(2), "q: a parameter read as one matrix")] + ([] if even else [(Shard(1), "cannot be viewed")])
    for placement, message in refused:
        model = _EinsumBranch()
        plan = idinit.plan(model, example_inputs=(torch.randn(3, 4),))
        _refused(model, plan, "q", torch.full((6, 2, 5), 7.0), mesh, placement, message)


class _FlatExperts(nn.Module):
    """Experts stored flat, ``(experts * rows, cols)``, and viewed per expert (HF DBRX's layout)."""

    def __init__(self, experts: int):
        super().__init__()
        self.experts = experts
        self.stem = nn.Linear(4, 4)
        self.up = nn.Parameter(torch.randn(experts * 6, 4))
        self.down = nn.Parameter(torch.randn(experts * 6, 4))

    def forward(self, x):
        h = self.stem(x)
        up, down = self.up.view(self.experts, 6, 4), self.down.view(self.experts, 6, 4)
        return h + sum(torch.relu(h @ up[e].t()) @ down[e] for e in range(self.experts))


def check_sharded_flat_experts(mesh) -> None:
    """A flat stack sharded along its rows (FSDP2's dim 0) where every shard holds whole experts (4 experts
    on 2 or 4 ranks) is written in place, equal bit for bit to the unsharded result; one whose shards cut an
    expert (3 experts of 6 rows: 9 rows per rank on 2, 5 on 4) is refused on every rank before anything is
    written."""
    for scheme in ("idinit", "kaiming"):
        reference = _FlatExperts(4)
        plan = idinit.plan(reference, scheme, example_inputs=(torch.randn(3, 4),))
        assert (plan["up"].layout, plan["down"].layout, plan["up"].stack) == ("stacked_flat", "stacked_t_flat", 4), plan
        _apply_sharded_and_whole(reference, plan, ("up", "down"), mesh, Shard(0))
    model = _FlatExperts(3)
    plan = idinit.plan(model, example_inputs=(torch.randn(3, 4),))
    _refused(model, plan, "down", torch.full((18, 4), 7.0), mesh, Shard(0),
             "down: a stack of 3 matrices of 6 rows stored flat as shape (18, 4)", "cuts a matrix apart")


def check_experts_after_fully_shard(mesh, build=_FusedExperts, layout: str = "stacked") -> None:
    """The FSDP2 order on a model with fused experts (3-D, or flat: ``build``): built on meta, ``fully_shard``,
    ``to_empty``, then ``init_``: equal bit for bit to ``init_`` of the unsharded model."""
    from torch.distributed.fsdp import fully_shard

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    models = []
    for shard in (False, True):
        with torch.device("meta"):
            model = build()
        if shard:
            fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        plan = idinit.init_(model, example_inputs=(x,), generator=torch.Generator().manual_seed(5))
        assert plan["up"].layout == layout and plan["down"].role == "branch_end", plan
        models.append(model)
    for (name, p), want in zip(models[1].named_parameters(), models[0].parameters()):
        assert torch.equal(p.full_tensor(), want), name


def check_refusals(mesh) -> None:
    """Placements that cannot be written shard by shard are refused before anything is written."""
    from torch.distributed.tensor import DTensor, Partial

    kernel = distribute_tensor(torch.full((4, 4, 4, 4), 7.0), mesh, [Shard(2)])
    partial = DTensor.from_local(torch.full((4, 4), 7.0), mesh, [Partial()])
    for t, message in ((kernel, "spatial dimension"), (partial, "Partial")):
        before = t.to_local().clone()
        try:
            idinit.identity_(t)
        except ValueError as e:
            assert message in str(e), e
        else:
            raise AssertionError(f"{t.placements} was accepted")
        assert torch.equal(t.to_local(), before)


def run(rank: int, world: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        if world == 2:
            count = check_tensors(mesh, [[Shard(0)], [Shard(1)], [Replicate()]])
            assert count == 3 * len(SHAPES) * (len(FNS) + 1)
        else:  # uneven and empty shards along both dimensions, then a 2 x 2 mesh cutting both at once
            check_tensors(mesh, [[Shard(0)], [Shard(1)]])
            mesh2 = init_device_mesh("cpu", (2, 2))
            check_tensors(mesh2, [[Shard(0), Shard(1)], [Shard(0), Shard(0)]])
        check_fsdp(mesh)
        if world == 2:
            check_init_after_fully_shard(mesh)
            check_experts_after_fully_shard(mesh)
            check_experts_after_fully_shard(mesh, lambda: _FlatExperts(4), "stacked_flat")
        check_column_sharded_model(mesh)
        check_sharded_experts(mesh)
        check_sharded_contracted(mesh)
        check_sharded_flat_experts(mesh)
        check_refusals(mesh)
    finally:
        dist.destroy_process_group()

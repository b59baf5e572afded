"""The plan reports every state it changes, planning changes none, and wrong argument types are named."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import idinit


class Stateful(nn.Module):
    """A forward pass that writes a buffer in place, replaces another, updates BN statistics in training
    mode, and draws random numbers: everything planning must undo."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_mean", torch.zeros(4))

    def forward(self, x):
        self.calls += 1
        self.last_mean = x.mean(0).detach()
        self.bn.train()  # a model that forces its own mode: planning's eval() does not stop it
        h = self.bn(self.fc1(x)) + torch.rand_like(x)
        return self.fc2(F.dropout(h, 0.5, training=True))


def test_planning_with_example_inputs_restores_buffers_and_the_rng():
    model = Stateful()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.25)
    before = {n: (b, b.clone()) for n, b in model.named_buffers()}
    x = torch.randn(3, 4)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    idinit.plan(model, example_inputs=(x,))
    assert torch.equal(torch.get_rng_state(), rng)
    for name, (tensor, value) in before.items():
        now = model.get_buffer(name)
        assert now is tensor, name  # the replaced buffer is put back
        assert torch.equal(now, value), name
    # the planted faults are real: the same forward pass outside planning changes all of them
    model(x)
    assert model.calls.item() == 1 and model.bn.num_batches_tracked.item() == 1
    assert not torch.equal(torch.get_rng_state(), rng)


def test_plan_lists_the_running_statistics_it_resets():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    model[4].requires_grad_(False)  # frozen: neither initialised nor reset
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.fill_(3.0)
            bn.num_batches_tracked.fill_(9)
    plan = idinit.plan(model)
    listed = {n for n, action in plan.states.items() if action.startswith("reset")}
    assert listed == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert "1.num_batches_tracked" in str(plan)
    idinit.init_(model)
    assert torch.all(model[1].running_mean == 0) and model[1].num_batches_tracked.item() == 0
    assert torch.all(model[4].running_mean == 3.0) and model[4].num_batches_tracked.item() == 9


def test_fused_override_reports_the_blocks_it_fills():
    even = nn.Linear(4, 12, bias=False)
    plan = idinit.init_(even, overrides={"weight": "attention_qkv"}, loose=0.0)
    assert plan["weight"].blocks == 3 and "[3 blocks]" in str(plan)
    for block in even.weight.detach().chunk(3, 0):
        assert torch.equal(block, torch.eye(4))
    odd = nn.Linear(3, 10, bias=False)
    plan = idinit.init_(odd, overrides={"weight": "attention_qkv"}, loose=0.0)
    entry = plan["weight"]
    assert entry.blocks == 1
    assert "[3 blocks]" not in str(plan) and "10 rows do not split into 3" in entry.note
    assert torch.equal(odd.weight, idinit.identity_(torch.empty(10, 3), loose=0.0))  # filled as one matrix


@pytest.mark.parametrize("kwargs, error, match", [
    ({"overrides": ["0"]}, TypeError, r"overrides must be a dict \{name pattern: role\}.*got list"),
    ({"overrides": {"0": 1}}, TypeError, r"overrides must map name patterns \(str\) to roles \(str\)"),
    ({"include_frozen": "yes"}, TypeError, "include_frozen must be True or False, got str"),
    ({"reset_kept": 1}, TypeError, "reset_kept must be True or False, got int"),
    ({"use_registry": None}, TypeError, "use_registry must be True or False, got NoneType"),
    ({"generator": 0}, TypeError, "generator must be a torch.Generator or None, got int"),
    ({"conv": "diagonal"}, ValueError, "conv='diagonal' is not one of patch, channel"),
])
def test_wrong_argument_types_name_the_argument(kwargs, error, match):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(error, match=match):
        idinit.init_(model, **kwargs)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_lazy_module_with_example_inputs_says_what_to_run():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    match = r"model: parameter '0.weight' is uninitialised.*run model\(\*example_inputs\)"
    with pytest.raises(ValueError, match=match):
        idinit.plan(model, example_inputs=(torch.randn(2, 3),))
    assert isinstance(model[0].weight, nn.parameter.UninitializedParameter)  # not run behind the user's back
    model(torch.randn(2, 3))
    assert idinit.plan(model, example_inputs=(torch.randn(2, 3),))["0.weight"].role == "stem"


def test_init_that_fails_to_plan_leaves_the_buffers_as_they_were():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="matches no parameter or module"):
        idinit.init_(model, overrides={"nope*": "head"})
    assert torch.all(model[1].running_mean == 5.0)  # init_ rebuilds buffers before planning: undone
    assert torch.equal(torch.get_rng_state(), state)

"""torch.compile, nn.DataParallel and DistributedDataParallel: plan / init_ see the user's model inside,
under the user's own parameter names."""
import copy
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

import idinit


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))


def _expected_names() -> list[str]:
    return ["0.weight", "0.bias", "2.weight", "2.bias"]


def _check(wrapped: nn.Module, inner: nn.Module) -> None:
    plan = idinit.plan(wrapped)
    assert [e.name for e in plan] == _expected_names()
    assert plan.model_name == "Sequential"
    plan = idinit.init_(wrapped, loose=0.0)
    assert [e.name for e in plan] == _expected_names()
    assert torch.equal(inner[0].weight, torch.eye(6) * 2 ** 0.5)  # the stem: IDI with gain sqrt(2)
    assert torch.all(inner[0].bias == 0)
    # a plan made on the bare model (the user's names) applies to the wrapped one, as to the bare one
    bare_plan = idinit.plan(inner, "kaiming")
    reference = copy.deepcopy(inner)
    bare_plan.apply(reference, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for p in inner.parameters():
            p.fill_(float("nan"))
    assert bare_plan.apply(wrapped, generator=torch.Generator().manual_seed(3)) is bare_plan
    for (name, got), want in zip(inner.named_parameters(), reference.parameters()):
        assert torch.equal(got, want), name


def test_compiled_model():
    model = _model()
    compiled = torch.compile(model)  # compiles lazily: nothing is traced here
    assert [n for n, _ in compiled.named_parameters()][0] == "_orig_mod.0.weight"
    _check(compiled, model)


def test_data_parallel():
    model = _model()
    _check(nn.DataParallel(model), model)


def test_nested_wrappers():
    model = _model()
    _check(nn.DataParallel(torch.compile(model)), model)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_data_parallel():
    if dist.is_initialized():
        pytest.fail("a process group is already initialised in this test process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model)
        assert [n for n, _ in ddp.named_parameters()][0] == "module.0.weight"
        _check(ddp, model)
        # the wrapper still trains the initialised weights
        ddp(torch.randn(4, 6)).sum().backward()
        assert model[0].weight.grad is not None
    finally:
        dist.destroy_process_group()


def test_wrong_model_type_names_the_argument():
    with pytest.raises(TypeError, match="model must be an nn.Module, got dict"):
        idinit.init_({"weight": torch.zeros(2, 2)})

"""init_ refuses a value the model's dtype cannot hold before it rebuilds any buffer or runs any own
init (issue 13 §4, found by scripts/audit_bad_inputs.py): the model is left bitwise as it was."""
import pytest
import torch
from torch import nn

import idinit


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        return self.head((x + self.bn1(self.conv1(x))).mean((2, 3)))


def _model(dtype):
    torch.manual_seed(0)
    m = Block().to(dtype)
    for bn in (m.bn0, m.bn1):  # statistics that are not the defaults a rebuild would give
        bn.running_mean.fill_(0.25)
        bn.running_var.fill_(2.0)
        bn.num_batches_tracked.fill_(7)
    return m


@pytest.mark.parametrize("dtype, option", [(torch.float32, {"loose": 1e39}), (torch.float16, {"eps": 7e4})])
def test_a_refused_init_leaves_buffers_and_parameters_bitwise(dtype, option):
    model = _model(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    with pytest.raises(ValueError, match="overflows"):
        idinit.init_(model, example_inputs=x, **option)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    # the same call with a value the dtype holds does reset the statistics (so the check above can fail)
    idinit.init_(model, example_inputs=x)
    assert int(model.bn0.num_batches_tracked) == 0

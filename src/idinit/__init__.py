"""idinit: IDInit (Pan et al., ICLR 2025), identity-based initialisation for PyTorch models.

Tensor level, in the style of :mod:`torch.nn.init` (in place, returns the tensor)::

    idinit.identity_(linear.weight)          # IDI / IDIC (patch-maintain for conv kernels)
    idinit.zero_preserving_(last.weight)     # IDIZ / IDIZC for the last layer of a residual branch
    idinit.channel_identity_(conv.weight)    # channel-maintain conv (the paper's ablation)
    idinit.hadamard_(linear.weight)          # ZerO's partial identity / scaled Hadamard

Model level (any model: torchvision, timm, HF transformers, yours; eager, or built on the meta device
and materialised with ``to_empty()``; ``torch.compile`` / DDP / DataParallel wrappers are seen through)::

    plan = idinit.init_(model)               # prints as a table of every parameter's role and init
    model, plan = idinit.hf.from_config(config)   # a transformers model built on meta, then IDInit
"""
from idinit.check import Report, check
from idinit.init import channel_identity_, hadamard_, identity_, zero_preserving_
from idinit import hf
from idinit.plan import Plan, PlanEntry, init_, plan
from idinit.roles import ROLES, tag
from idinit.schemes import SCHEMES

__version__ = "0.1.0"

__all__ = ["identity_", "channel_identity_", "zero_preserving_", "hadamard_"]
__all__ += ["check", "Report", "plan", "init_", "Plan", "PlanEntry", "tag", "ROLES", "SCHEMES", "hf"]

"""Models of the lab: CIFAR ResNets (option A / B shortcuts) and their Fixup / ReZero / SkipInit
variants, built and initialised by name through :func:`build_model`."""
from .build import ARCHS, INITS, LIBRARY_SCHEMES, build_model, parameter_groups, parse_arch
from .cifar_resnet import BasicBlock, CifarResNet, ProjectionShortcut, ZeroPadShortcut
from .fixup_resnet import FixupBlock, FixupResNet, fixup_init_, fixup_parameter_groups

__all__ = ["ARCHS", "INITS", "LIBRARY_SCHEMES", "BasicBlock", "CifarResNet", "FixupBlock", "FixupResNet",
           "ProjectionShortcut", "ZeroPadShortcut", "build_model", "fixup_init_", "fixup_parameter_groups",
           "parameter_groups", "parse_arch"]

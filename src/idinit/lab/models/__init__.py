"""Models of the lab: CIFAR ResNets (option A / B shortcuts) and their Fixup / ReZero / SkipInit
variants, and the paper's networks beyond residual ones (AllConv, Res-112 without BN, Linear-5),
built and initialised by name through :func:`build_model`."""
from .allconv import AllConv, all_conv
from .build import ARCHS, INITS, LIBRARY_SCHEMES, OTHER_ARCHS, build_model, parameter_groups, parse_arch
from .cifar_resnet import SHORTCUTS, BasicBlock, CifarResNet, ProjectionShortcut, ZeroPadShortcut, make_shortcut
from .fixup_resnet import FixupBlock, FixupResNet, fixup_init_, fixup_parameter_groups
from .linear5 import Linear5
from .res112 import FixupRes112, Res112

__all__ = ["ARCHS", "INITS", "LIBRARY_SCHEMES", "OTHER_ARCHS", "AllConv", "BasicBlock", "CifarResNet", "FixupBlock",
           "FixupRes112", "FixupResNet", "Linear5", "ProjectionShortcut", "Res112", "SHORTCUTS", "ZeroPadShortcut", "all_conv",
           "build_model", "fixup_init_", "fixup_parameter_groups", "make_shortcut", "parameter_groups", "parse_arch"]

"""The paper's mechanism experiments, each a named analysis that writes a JSON record and a PNG.

=========================  ============================================================  =============
name                       what it measures                                              paper
=========================  ============================================================  =============
``momentum``               identity-initialised deep linear net, target -I: GD keeps the  Sec 3.1.1,
                           layers equal and stalls; SGD (+ momentum) breaks the symmetry   A.2, Fig 10
``rank``                   rank(W2 - I) during SGD for zero padding vs IDI (+ loose)      Thm 3.1,
                                                                                          Fig 4b
``isometry``               mean squared singular value of the input-output Jacobian of a  Fig 1, C.5,
                           64-block residual MLP on CIFAR-10, and its training loss       Fig 18
``signal``                 output std at init (and under input noise) of FC / ResFC /     C.3, Fig 15
                           AllConv / ResConv, IDInit vs Xavier / Kaiming
``remaining-weight``       branch end at zero, the other branch weight Xavier, Hadamard   Fig 2
                           or identity (square and rectangular): loss curves
``dead-neurons``           branch-end weights with exactly zero gradient in the first     Sec 3.2
                           steps: exact zero vs zero-preserving (IDIZ)
``weight-distribution``    histograms and near-zero fractions of ResNet weights at init   C.4, Fig 17
                           and after training, IDInit vs Kaiming
``long-stem``              activation std through Res-112's 109-layer stem (no BN) at     C.6, Fig 19
                           init: Kaiming / Fixup / IDInit, option A / B shortcuts          (t = 0)
``startup``                the first SGD steps of ResNet-56 (lr 0.2, no warm-up): loss,   Table 1
                           gradient / update norms, BN input scale, branch/skip ratios,   (ours)
                           per init, with interventions applied to every init alike
=========================  ============================================================  =============

``run_analysis(name, out_dir=..., overrides={"steps": "200"})`` runs one; the CLI's
``idinit analyse NAME --set k=v`` forwards to it.
"""
from __future__ import annotations

from typing import Callable

from . import (dead_neurons, isometry, long_stem, momentum, rank, remaining_weight, signal, startup,
               weight_distribution)

ANALYSES: dict[str, Callable[..., dict]] = {
    "momentum": momentum.run,
    "rank": rank.run,
    "isometry": isometry.run,
    "signal": signal.run,
    "remaining-weight": remaining_weight.run,
    "dead-neurons": dead_neurons.run,
    "weight-distribution": weight_distribution.run,
    "long-stem": long_stem.run,
    "startup": startup.run,
}


def run_analysis(name: str, *, out_dir, data_dir=None, device="cpu",
                 overrides: dict[str, str] | None = None) -> dict:
    """Run analysis ``name``; write ``<out_dir>/<name>.json`` (atomic) and ``<out_dir>/<name>.png``.

    ``overrides`` maps settings fields to strings (``{"steps": "200", "seeds": "3"}``), converted to
    each field's type. An unknown ``name`` or override key raises ``ValueError`` listing the valid
    ones. Returns the record that was written.
    """
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; valid names: {sorted(ANALYSES)}")
    return ANALYSES[name](out_dir=out_dir, data_dir=data_dir, device=device, overrides=overrides)


__all__ = ["ANALYSES", "run_analysis"]

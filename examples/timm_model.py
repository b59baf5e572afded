"""IDInit for a timm model: ``timm.create_model(name, pretrained=False)`` then ``idinit.init_(model)``.

    python examples/timm_model.py                          # a tiny ViT with layer scale, on the CPU
    python examples/timm_model.py --model resnet18 --meta

``--meta`` builds the model on the meta device and materialises it with ``to_empty()`` first: the
position embedding, class token and layer scales get timm's own ``init_weights()`` /
``reset_parameters()``, the non-persistent buffers its ``init_non_persistent_buffers()``.
"""
from __future__ import annotations

import argparse

import timm
import torch

import idinit

TINY = {
    "deit3_small_patch16_224": dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2),
    "vit_tiny_patch16_224": dict(img_size=32, patch_size=8, depth=2),
    "resnet18": {},
    "swin_tiny_patch4_window7_224": dict(img_size=56, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1)),
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(TINY), default="deit3_small_patch16_224")
    parser.add_argument("--meta", action="store_true", help="build on the meta device, then to_empty()")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    kwargs = dict(TINY[args.model], pretrained=False, num_classes=10)
    if args.meta:
        with torch.device("meta"):
            model = timm.create_model(args.model, **kwargs)
        model.to_empty(device="cpu")
    else:
        model = timm.create_model(args.model, **kwargs)
    size = kwargs.get("img_size", 64)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    # after to_empty() the memory is garbage: init_ never keeps it (idinit.values), and judges a layer
    # scale on what timm's own init writes into it, so --meta gives the eager model's plan
    plan = idinit.init_(model, example_inputs=(x,), generator=torch.Generator().manual_seed(args.seed))
    print(plan)

    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"non-finite after init: {bad}"
    logits = model(x)
    logits.sum().backward()
    result = {"logit_rms": logits.pow(2).mean().sqrt().item()}
    print(f"logit RMS at init {result['logit_rms']:.3g} (the head starts zero-preserving)")
    return result


if __name__ == "__main__":
    main()

"""Bad (and borderline valid) inputs of the tensor initialisers ``idinit.identity_``, ``channel_identity_``,
``zero_preserving_``, ``hadamard_``."""
from __future__ import annotations

import decimal
import fractions
import tempfile

import numpy as np
import torch
from torch import nn

import idinit
from . import Case, tensor_bytes

FNS = {"identity_": idinit.identity_, "channel_identity_": idinit.channel_identity_,
       "zero_preserving_": idinit.zero_preserving_, "hadamard_": idinit.hadamard_}
SCALARS = {"identity_": ("gain", "loose"), "channel_identity_": ("gain", "loose"), "zero_preserving_": ("eps",),
           "hadamard_": ()}
QUIET = {"identity_": {"loose": 0.0}, "channel_identity_": {"loose": 0.0}, "zero_preserving_": {},
         "hadamard_": {}}


def _expected(fn: str, shape, dtype, kwargs) -> torch.Tensor:
    """What ``fn`` gives a fresh contiguous float64 tensor of ``shape``, cast to ``dtype``."""
    gen = kwargs.get("generator")
    kw = dict(kwargs, generator=torch.Generator().manual_seed(7)) if gen is not None else dict(kwargs)
    return FNS[fn](torch.full(shape, 5.0, dtype=torch.float64), **kw).to(dtype)


def _matches(fn: str, view_of, dtype=None, **kwargs):
    """A check: the result equals :func:`_expected` for its shape (and dtype), bitwise."""
    def check(result, seen):
        got = view_of(result) if view_of else result
        want = _expected(fn, tuple(got.shape), dtype or got.dtype, kwargs)
        if not torch.equal(got.detach().double(), want.double()):
            bad = (got.detach().double() != want.double()).sum().item()
            return f"{bad} of {got.numel()} values differ from the same pattern on a contiguous float64 tensor"
        return True
    return check


def _case(group, name, fn, make, kwargs=None, expect="error", words=(), check=None, kinds=None):
    """A case calling ``FNS[fn](tensor, **kwargs)`` on a fresh ``make()`` each run."""
    holder = {}

    def run():
        holder["t"] = make() if "t" not in holder else holder["t"]
        for value in (kwargs or {}).values():
            if isinstance(value, torch.Generator):
                value.manual_seed(7)  # the state _expected draws from
        return FNS[fn](holder["t"], **(kwargs or {}))

    def snapshot():
        holder.setdefault("t", make())
        return tensor_bytes(holder["t"])

    extra = {"kinds": kinds} if kinds else {}
    return Case(group, f"{fn}: {name}", run, expect, (fn,) + tuple(words) if words else (fn,),
                check=check or (lambda r, s: True), snapshot=snapshot, **extra)


def _filled(shape, dtype=torch.float32):
    return lambda: torch.full(shape, 5.0, dtype=dtype)


def cases(scratch):
    out = []
    for fn in FNS:
        quiet = QUIET[fn]
        # -- not a tensor
        for name, value in (("None", None), ("a list", [[1.0, 0.0], [0.0, 1.0]]), ("a numpy array", np.zeros((3, 3))),
                            ("an int", 3), ("an nn.Linear", nn.Linear(3, 3))):
            out.append(_case("not a tensor", name, fn, lambda v=value: v, words=("tensor",)))
        # -- shapes
        for name, shape in (("0-d", ()), ("1-d", (5,)), ("zero-sized kernel dim", (4, 4, 0, 3))):
            out.append(_case("shape", name, fn, _filled(shape), words=("dimension", "shape")))
        out.append(_case("shape", "zero elements (0, 4)", fn, _filled((0, 4)), expect="ok",
                         check=lambda r, s: True if any("zero-element" in w for w in s) else "no warning"))
        for name, shape in (("5-D kernel", (4, 2, 3, 3, 3)), ("D_in = 1", (6, 1)), ("tall 9x4", (9, 4)),
                            ("wide 3x10", (3, 10)), ("grouped conv (8, 2, 3, 3)", (8, 2, 3, 3)),
                            ("1x1 conv", (6, 6, 1, 1))):
            out.append(_case("valid shape", name, fn, _filled(shape), quiet, "ok", check=_matches(fn, None, **quiet)))
        # -- dtypes
        for dtype in (torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64):
            out.append(_case("dtype", str(dtype), fn, _filled((4, 4), dtype), words=("dtype", "floating")))
        for name in ("float8_e8m0fnu", "float4_e2m1fn_x2"):
            if hasattr(torch, name):
                make = (lambda n=name: torch.zeros(4, 4, dtype=getattr(torch, n)))
                out.append(_case("dtype", name, fn, make, words=("dtype", name)))
        for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2):
            out.append(_case("valid dtype", str(dtype), fn, _filled((6, 4), dtype), quiet, "either",
                             words=("dtype",), check=_matches(fn, None, dtype, **quiet)))
        # -- layouts and tensor kinds
        out.append(_case("layout", "sparse COO", fn, lambda: torch.eye(4).to_sparse(), words=("dense", "layout")))
        out.append(_case("layout", "sparse CSR", fn, lambda: torch.eye(4).to_sparse_csr(), words=("dense", "layout")))
        out.append(_case("layout", "nested", fn, lambda: torch.nested.nested_tensor([torch.ones(2, 3),
                                                                                        torch.ones(4, 3)]),
                         words=("nested",)))

        def inference():
            with torch.inference_mode():
                return torch.full((4, 4), 5.0)
        out.append(_case("layout", "inference tensor outside inference_mode", fn, inference, words=("inference",)))

        def inside(f=fn, quiet=quiet):
            t = inference()
            with torch.inference_mode():
                return FNS[f](t, **quiet)
        out.append(Case("layout", f"{fn}: inference tensor inside inference_mode", inside, "ok",
                        check=_matches(fn, None, **quiet)))
        out.append(_case("layout", "meta tensor (validated, nothing to write)", fn,
                         lambda: torch.empty(4, 4, device="meta"), quiet, "ok",
                         check=lambda r, s: True if r.device.type == "meta" else "not meta"))
        # -- views sharing memory (refused) and plain strided views (filled in place)
        overlapping = {
            "expand (4,1)->(4,4)": lambda: torch.zeros(4, 1).expand(4, 4),
            "as_strided overlapping rows": lambda: torch.zeros(8).as_strided((4, 4), (1, 1)),
            "stride-0 kernel dim": lambda: torch.zeros(4, 4, 1, 3).expand(4, 4, 3, 3),
            "broadcast_to": lambda: torch.broadcast_to(torch.zeros(4), (3, 4)),
        }
        for name, make in overlapping.items():
            out.append(_case("overlapping view", name, fn, make, quiet, words=("memory", "overlap")))
        views = {
            ".t()": (lambda: torch.full((4, 7), 5.0).t(), None),
            "every 2nd row": (lambda: torch.full((8, 5), 5.0)[::2], None),
            "permuted kernel": (lambda: torch.full((3, 3, 4, 6), 5.0).permute(2, 3, 0, 1), None),
            "channels_last kernel": (lambda: torch.full((6, 4, 3, 3), 5.0).to(memory_format=torch.channels_last), None),
            "transpose(0,1) of a ConvTranspose kernel": (lambda: nn.ConvTranspose2d(4, 6, 3).weight.detach()
                                                          .transpose(0, 1), None),
        }
        for name, (make, view_of) in views.items():
            out.append(_case("strided view", name, fn, make, quiet, "ok", check=_matches(fn, view_of, **quiet)))
        # -- DTensor (a one-process gloo world)
        out.extend(_dtensor_cases(fn, quiet, scratch))
        # -- autograd
        out.append(_case("autograd", "a Parameter (leaf, requires_grad)", fn,
                         lambda: nn.Parameter(torch.full((5, 5), 5.0)), quiet, "ok", check=_matches(fn, None, **quiet)))

        def derived_check(r, s):
            return True if any("computed from others" in w for w in s) else "no warning that it is recomputed"
        out.append(_case("autograd", "the output of a computation (non-leaf)", fn,
                         lambda: nn.Parameter(torch.ones(5, 5)) * 2, quiet, "ok", check=derived_check))
        for para in ("weight_norm", "spectral_norm", "orthogonal"):
            def make(p=para):
                torch.manual_seed(0)
                return getattr(nn.utils.parametrizations, p)(nn.Linear(5, 5)).weight
            out.append(_case("autograd", f"a {para} parametrized weight", fn, make, quiet, "ok", check=derived_check))
        # -- scalar arguments
        for arg in SCALARS[fn]:
            bad = {"-1": -1.0, "nan": float("nan"), "inf": float("inf"), "'1'": "1", "None": None, "True": True,
                   "1+0j": 1 + 0j, "[1.0]": [1.0], "1-d tensor [1.0]": torch.tensor([1.0]),
                   "0-d bool tensor": torch.tensor(True), "0-d complex tensor": torch.tensor(1 + 0j),
                   "numpy nan": np.float64("nan")}
            for name, value in bad.items():
                out.append(_case("scalar argument", f"{arg}={name}", fn, _filled((4, 4)), {**quiet, arg: value},
                                 words=(arg,)))
            good = {"0-d tensor 1.5": torch.tensor(1.5), "np.float32(1.5)": np.float32(1.5),
                    "np.int64(2)": np.int64(2), "Fraction(3, 2)": fractions.Fraction(3, 2),
                    "0-d float64 tensor": torch.tensor(0.5, dtype=torch.float64)}
            seeded = {"generator": torch.Generator().manual_seed(7)} if arg == "loose" else {}
            for name, value in good.items():
                plain = float(value)
                out.append(_case("valid scalar", f"{arg}={name}", fn, _filled((4, 4)), {**quiet, **seeded, arg: value},
                                 "ok", check=_matches(fn, None, **{**quiet, arg: plain, **seeded})))
            for name, value in (("np.array(1.5) (0-d array)", np.array(1.5)), ("Decimal('1.5')", decimal.Decimal("1.5"))):
                out.append(_case("valid scalar", f"{arg}={name}", fn, _filled((4, 4)), {**quiet, arg: value}, "either",
                                 words=(arg,), check=_matches(fn, None, **{**quiet, arg: float(value)})))
        # -- values the dtype cannot hold
        if fn in ("identity_", "channel_identity_"):
            overflow = [("float16 gain=7e4", torch.float16, {"gain": 7e4, "loose": 0.0}),
                        ("bfloat16 gain=1e39", torch.bfloat16, {"gain": 1e39, "loose": 0.0}),
                        ("float32 loose=1e39", torch.float32, {"loose": 1e39}),
                        ("float32 gain=3e38 + loose=1e38", torch.float32, {"gain": 3e38, "loose": 1e38}),
                        ("float16 gain=1e-8 (rounds to 0)", torch.float16, {"gain": 1e-8, "loose": 0.0}),
                        ("float64 gain=1e309 (inf)", torch.float64, {"gain": 1e309, "loose": 0.0})]
            fine = [("float16 gain=65504", torch.float16, {"gain": 65504.0, "loose": 0.0}),
                    ("float64 gain=1e300", torch.float64, {"gain": 1e300, "loose": 0.0})]
        elif fn == "zero_preserving_":
            overflow = [("float16 eps=7e4", torch.float16, {"eps": 7e4}),
                        ("float16 eps=1e-8 (rounds to 0)", torch.float16, {"eps": 1e-8}),
                        ("float32 eps=1e39", torch.float32, {"eps": 1e39}),
                        ("float32 eps=1e-46 (rounds to 0)", torch.float32, {"eps": 1e-46}),
                        ("bfloat16 eps=1e39", torch.bfloat16, {"eps": 1e39})]
            fine = [("float32 eps=3e38", torch.float32, {"eps": 3e38}), ("float16 eps=0", torch.float16, {"eps": 0.0})]
        else:
            overflow, fine = [], [("float16 16x3 (1/sqrt(16))", torch.float16, {})]
        for name, dtype, kw in overflow:
            shape = (6, 4)
            out.append(_case("dtype overflow", name, fn, _filled(shape, dtype), kw, words=("overflow", "round", "finite")))
        for name, dtype, kw in fine:
            out.append(_case("dtype range", name, fn, _filled((16, 3), dtype), kw, "ok", check=_matches(fn, None, dtype, **kw)))
        # -- generators
        if fn in ("identity_", "channel_identity_"):
            for name, gen in (("an int", 1), ("numpy's default_rng()", np.random.default_rng(0)), ("'cpu'", "cpu")):
                out.append(_case("generator", f"generator={name}", fn, _filled((4, 4)), {"generator": gen},
                                 words=("generator",)))
                out.append(_case("generator", f"generator={name} with loose=0", fn, _filled((4, 4)),
                                 {"generator": gen, "loose": 0.0}, words=("generator",)))
            out.append(_case("generator", "a seeded CPU generator", fn, _filled((6, 6)),
                             {"generator": torch.Generator().manual_seed(7), "loose": 1e-2}, "ok",
                             check=_matches(fn, None, generator=True, loose=1e-2)))
            out.append(_case("generator", "loose=1e-2 without generator (global RNG)", fn, _filled((6, 6)),
                             {"loose": 1e-2}, "ok", check=lambda r, s: True if (r.count_nonzero() == 6) else "pattern"))
        else:
            out.append(_case("generator", "generator= given (takes none)", fn, _filled((4, 4)),
                             {"generator": torch.Generator()}, words=("generator",)))
        # -- argument mistakes
        out.append(_case("arguments", "misspelt keyword", fn, _filled((4, 4)), {"gian": 1.0}, words=("gian",)))
        out.append(_case("arguments", "NaN-filled tensor (overwritten)", fn, lambda: torch.full((5, 3), float("nan")),
                         quiet, "ok", check=_matches(fn, None, **quiet)))
    return out


def _dtensor_cases(fn, quiet, scratch):
    import torch.distributed as dist
    try:
        from torch.distributed.tensor import DeviceMesh, DTensor, Partial, Replicate, Shard, distribute_tensor
        if not dist.is_initialized():
            scratch.mkdir(parents=True, exist_ok=True)
            store = tempfile.mktemp(dir=scratch)
            dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        mesh = DeviceMesh("cpu", [0])
    except Exception:  # noqa: BLE001 - no distributed backend here: these cases are not run
        return []
    out = []
    for name, placement in (("Shard(0)", Shard(0)), ("Shard(1)", Shard(1)), ("Replicate()", Replicate())):
        def make(p=placement):
            return distribute_tensor(torch.full((8, 6), 5.0), mesh, [p])
        out.append(_case("DTensor", f"DTensor {name}", fn, make, quiet, "ok",
                         check=_matches(fn, lambda r: r.full_tensor(), **quiet)))

    def partial():
        return DTensor.from_local(torch.full((8, 6), 5.0), mesh, [Partial()])
    out.append(_case("DTensor", "DTensor Partial()", fn, partial, quiet, words=("partial",)))
    out.append(_case("DTensor", "DTensor Shard(2) of a kernel (spatial dim)", fn,
                     lambda: distribute_tensor(torch.full((4, 4, 3, 3), 5.0), mesh, [Shard(2)]), quiet,
                     words=("spatial",)))
    return out

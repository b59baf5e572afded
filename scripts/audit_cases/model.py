"""Bad (and borderline valid) inputs of the model level: ``idinit.plan``, ``idinit.init_``, ``Plan.apply``.
Every refusal must leave every parameter and buffer bitwise as it was, and the global RNG state."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import idinit
from . import Case, model_state


def mlp(width=8, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 4)).to(dtype)


def normed():
    """LayerNorm first: the issue's model where a norm was reset before a later error."""
    torch.manual_seed(0)
    return nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


class Residual(nn.Module):
    def __init__(self, dropout=0.0):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.head(self.drop(x.mean((2, 3))))


def residual(dropout=0.0):
    torch.manual_seed(0)
    m = Residual(dropout)
    for bn in (m.bn0, m.bn1, m.bn2):  # running statistics that are not the defaults
        bn.running_mean.fill_(0.25)
        bn.running_var.fill_(2.0)
        bn.num_batches_tracked.fill_(7)
    return m


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _case(group, name, make, action, expect="error", words=(), check=None):
    """``action(model)`` on a fresh ``make()``; the snapshot is the model's state and the global RNG."""
    holder = {}

    def get():
        if "m" not in holder:
            holder["m"] = make()
        return holder["m"]

    return Case(group, name, lambda: action(get()), expect, words, check=(lambda r, s: check(get(), r, s)) if check
                else (lambda r, s: True), snapshot=lambda: model_state(get()))


def cases(scratch):
    out = []
    init_, plan = idinit.init_, idinit.plan
    # -- overrides of the wrong type or content
    for name, value in (("a list ['0']", ["0"]), ("a str", "0"), ("{1: 'identity'}", {1: "identity"}),
                        ("{'0': 1}", {"0": 1}), ("{'0': None}", {"0": None})):
        for fn_name, fn in (("plan", plan), ("init_", init_)):
            out.append(_case("overrides", f"{fn_name}(overrides={name})", mlp,
                             lambda m, v=value, f=fn: f(m, overrides=v), words=("overrides",)))
    for fn_name, fn in (("plan", plan), ("init_", init_)):
        out.append(_case("overrides", f"{fn_name}: unknown role", mlp, lambda m, f=fn: f(m, overrides={"0": "hiden"}),
                         words=("hiden", "role")))
    out.append(_case("overrides", "init_: a pattern matching nothing", mlp,
                     lambda m: init_(m, overrides={"nothing*": "keep"}), words=("nothing",)))

    def blocks_filled(m, p, seen):
        w = m[2].weight.detach()
        blocks = w.chunk(3, 0)
        if p["2.weight"].blocks != 3 or "[3 blocks]" not in str(p):
            return f"plan says {p['2.weight'].blocks} blocks"
        return True if all(torch.equal(b, torch.eye(4, 12)) for b in blocks) else "blocks not each an identity"
    out.append(_case("overrides", "attention_qkv on a 12-row Linear fills 3 blocks", lambda: nn.Sequential(
        nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4)),
        lambda m: init_(m, overrides={"2": "attention_qkv"}, loose=0.0), "ok", check=blocks_filled))

    def one_block(m, p, seen):
        e = p["2.weight"]
        row = next(line for line in str(p).splitlines() if line.startswith("2.weight"))
        return True if e.blocks == 1 and "filled as one matrix" in row and "blocks]" not in row else f"plan row: {row}"
    out.append(_case("overrides", "attention_qkv on a 10-row Linear: one block, said so", lambda: nn.Sequential(
        nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 4)),
        lambda m: init_(m, overrides={"2": "attention_qkv"}, loose=0.0), "ok", check=one_block))
    # -- flags and options of the wrong type or value
    for flag, value in (("include_frozen", "yes"), ("reset_kept", 1), ("use_registry", None), ("keep_model_values", "no")):
        out.append(_case("flags", f"init_({flag}={value!r})", mlp, lambda m, f=flag, v=value: init_(m, **{f: v}),
                         words=(flag,)))
    for name, kwargs, words in (("scheme='bogus'", {"scheme": "bogus"}, ("bogus",)),
                                ("scheme=None", {"scheme": None}, ("scheme",)),
                                ("kaiming with loose=", {"scheme": "kaiming", "loose": 1e-3}, ("loose",)),
                                ("loose=-1", {"loose": -1.0}, ("loose",)), ("loose=nan", {"loose": float("nan")}, ("loose",)),
                                ("eps='x'", {"eps": "x"}, ("eps",)), ("conv='bogus'", {"conv": "bogus"}, ("conv",)),
                                ("activation='bogus'", {"activation": "bogus"}, ("activation",)),
                                ("branch_end='bogus'", {"branch_end": "bogus"}, ("branch_end",)),
                                ("branch_end_norm=0", {"branch_end_norm": 0}, ("branch_end_norm",)),
                                ("eps=7e4 on a float16 model", {"eps": 7e4}, ("overflow", "eps")),
                                ("loose=1e39", {"loose": 1e39}, ("loose", "overflow"))):
        make = (lambda: residual().half()) if "float16" in name else residual
        out.append(_case("options", f"init_({name})", make, lambda m, k=kwargs: init_(m, example_inputs=X.to(
            next(m.parameters()).dtype), **k), words=words))
    # -- the model argument
    for name, value in (("None", None), ("a string", "resnet20"), ("a state_dict", mlp().state_dict())):
        out.append(Case("model", f"init_({name})", lambda v=value: init_(v), words=("model", "nn.Module")))
    out.append(_case("model", "a module without parameters", lambda: nn.Sequential(nn.ReLU()), init_,
                     words=("no parameters", "nothing")))
    for name, make in (("LazyLinear", lambda: nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))),
                       ("LazyConv2d", lambda: nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU()))):
        out.append(_case("lazy", f"{name} without inputs", make, init_, words=("lazy", "uninitialised")))
        out.append(_case("lazy", f"{name} with example_inputs", make,
                         lambda m: init_(m, example_inputs=X if "Conv" in str(m) else X[:, 0, 0, :5]),
                         words=("lazy", "uninitialised")))
    # -- example_inputs that cannot run: refused, BN statistics and RNG untouched
    for name, value, words in (("a string", "x", ("example_inputs", "input", "str")),
                               ("the wrong shape", torch.zeros(2, 5, 8, 8), ("example_inputs", "forward", "channels")),
                               ("int images", torch.zeros(2, 3, 8, 8, dtype=torch.long), ("example_inputs", "forward",
                                                                                           "long", "dtype")),
                               ("a dict with a wrong key", {"y": X}, ("example_inputs", "forward", "y"))):
        for fn_name, fn in (("plan", plan), ("init_", init_)):
            out.append(_case("example_inputs", f"{fn_name} with example_inputs {name}", residual,
                             lambda m, v=value, f=fn: f(m, example_inputs=v), words=words))
    # -- generators
    for name, gen in (("1", 1), ("'cpu'", "cpu"), ("numpy default_rng", np.random.default_rng(0))):
        out.append(_case("generator", f"init_(generator={name})", normed, lambda m, g=gen: init_(m, generator=g),
                         words=("generator",)))
        out.append(_case("generator", f"Plan.apply(generator={name})", normed,
                         lambda m, g=gen: plan(m).apply(m, g), words=("generator",)))
    out.append(_case("generator", "default scheme (reset_parameters) with a generator on apply", normed,
                     lambda m: plan(m, "default").apply(m, torch.Generator()), words=("generator", "manual_seed")))
    # -- plans that fail part-way: everything checked before the first write
    def edited(field, value, target="3.weight"):
        def action(m):
            p = plan(m)
            setattr(p[target], field, value)
            return p.apply(m)
        return action
    out.append(_case("failing plan", "an entry with an unknown initialiser", normed, edited("init", "bogus_"),
                     words=("bogus_", "unknown")))
    out.append(_case("failing plan", "an entry with a wrong shape", normed, edited("shape", (3, 3)),
                     words=("shape",)))
    out.append(_case("failing plan", "an entry naming no parameter", normed, edited("name", "9.weight"),
                     words=("9.weight",)))
    out.append(_case("failing plan", "gain=7e4 on a float16 model", lambda: normed().half(),
                     edited("args", {"gain": 7e4, "loose": 0.0}), words=("overflow", "gain")))
    out.append(_case("failing plan", "eps=1e-30 rounding to 0 in float16", lambda: normed().half(),
                     _eps_plan(), words=("round", "eps")))
    other = plan(mlp())
    out.append(_case("failing plan", "a plan of another model", normed, lambda m: other.apply(m),
                     words=("plan does not match",)))

    def with_param(param_factory, where="3"):
        def make():
            m = normed()
            setattr(m[int(where)], "weight", param_factory())
            return m
        return make
    out.append(_case("failing plan", "a parameter sharing memory (expand) after a LayerNorm",
                     with_param(lambda: nn.Parameter(torch.zeros(4, 1).expand(4, 8))), init_, words=("memory",)))

    def inference_param():
        with torch.inference_mode():
            t = torch.zeros(4, 8)
        return nn.Parameter(t, requires_grad=False)
    out.append(_case("failing plan", "an inference-tensor parameter after a LayerNorm (include_frozen)",
                     with_param(inference_param), lambda m: init_(m, include_frozen=True), words=("inference",)))
    out.append(_case("failing plan", "a complex parameter after a LayerNorm", with_param(
        lambda: nn.Parameter(torch.zeros(4, 8, dtype=torch.complex64))), init_, words=("complex", "dtype")))
    out.append(_case("failing plan", "a sparse parameter after a LayerNorm", with_param(
        lambda: nn.Parameter(torch.eye(4, 8).to_sparse())), init_, words=("dense", "layout", "sparse")))

    def qat():
        m = normed()
        m.qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
        torch.ao.quantization.prepare_qat(m.train(), inplace=True)
        m(torch.randn(3, 6))  # observers hold statistics
        return m
    out.append(_case("failing plan", "a QAT-prepared model with a wrong generator", qat,
                     lambda m: init_(m, generator=1), words=("generator",)))
    out.append(_case("failing plan", "a QAT-prepared model with example_inputs of the wrong shape", qat,
                     lambda m: init_(m, example_inputs=torch.zeros(2, 5)), words=("example_inputs", "forward", "shape", "size")))
    # -- states reported and restored
    def unchanged_after_plan(m, p, seen):
        again = residual(0.5)
        state = dict(again.named_buffers())
        for n, b in m.named_buffers():
            if not torch.equal(b, state[n]):
                return f"buffer {n} changed by planning"
        return True

    def rng_kept(action):
        def run(m):
            before = torch.get_rng_state()
            result = action(m)
            if not torch.equal(before, torch.get_rng_state()):
                raise AssertionError("the global RNG state moved")
            return result
        return run
    out.append(_case("state", "plan with example_inputs on a BN + dropout model in train mode",
                     lambda: residual(0.5).train(), rng_kept(lambda m: plan(m, example_inputs=X)), "ok", check=unchanged_after_plan))
    out.append(_case("state", "init_ with a generator leaves the global RNG", lambda: residual(0.5),
                     rng_kept(lambda m: init_(m, example_inputs=X, generator=torch.Generator().manual_seed(0))), "ok",
                     check=lambda m, p, s: True))

    def bn_listed(m, p, seen):
        want = {f"{b}.{s}" for b in ("bn0", "bn1", "bn2") for s in ("running_mean", "running_var", "num_batches_tracked")}
        missing = want - set(p.states)
        if missing:
            return f"plan.states does not list {sorted(missing)}"
        return True if all(int(getattr(m, b).num_batches_tracked) == 0 for b in ("bn0", "bn1", "bn2")) else "not reset"
    out.append(_case("state", "init_ reports the BN statistics it resets", residual, lambda m: init_(m, example_inputs=X), "ok",
                     check=bn_listed))

    def same_twice(m, p, seen):
        other = residual()
        init_(other, example_inputs=X, generator=torch.Generator().manual_seed(3))
        return all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), other.state_dict().values())) or "differ"
    out.append(_case("state", "init_ twice with the same seed gives the same model", residual,
                     lambda m: init_(m, example_inputs=X, generator=torch.Generator().manual_seed(3)), "ok", check=same_twice))

    def no_write_by_plan(m, p, seen):
        fresh = residual()
        return all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), fresh.state_dict().values())) \
            or "plan() changed the model"
    out.append(_case("state", "plan() writes nothing", residual, lambda m: plan(m, example_inputs=X), "ok", check=no_write_by_plan))

    def meta_model():
        with torch.device("meta"):
            m = Residual()
        return m.to_empty(device="cpu")
    out.append(_case("state", "a model materialised with to_empty()", meta_model,
                     lambda m: init_(m, example_inputs=X, keep_model_values=False), "ok",
                     check=lambda m, p, s: all(torch.isfinite(t).all() for t in m.state_dict().values()
                                               if t.is_floating_point()) or "non-finite values left"))
    # -- parametrized weights
    out.extend(_parametrized_cases())
    return out


def _eps_plan():
    def action(m):
        p = idinit.plan(m)
        p["3.weight"].init, p["3.weight"].args = "zero_preserving_", {"eps": 1e-30}
        return p.apply(m)
    return action


def _parametrized_cases():
    out = []

    def wn_check(m, p, seen):
        planned = torch.eye(8) * 1.0
        w = m[2].weight.detach()
        entry = next((e for e in p if e.name.startswith("2.parametrizations.weight")), None)
        if entry is None:
            return "no plan entry for the parametrization"
        if torch.allclose(w.double(), planned.double(), rtol=0, atol=1e-6):
            return True
        said = " ".join(e.note for e in p if e.name.startswith("2.parametrizations"))
        return True if "left" in said and "parametriz" in said else f"weight is not the planned identity: {w[0, :4]}"

    def make(kind):
        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), getattr(nn.utils.parametrizations, kind)(nn.Linear(8, 8)),
                                 nn.ReLU(), nn.Linear(8, 4))
        return build

    def said_or_done(m, p, seen):
        entries = [e for e in p if e.name.startswith("2.parametrizations")]
        if not entries:
            return "no plan entry for the parametrization"
        text = " ".join(e.note for e in entries)
        return True if "parametriz" in text else f"the plan does not say what happened: {text[:200]}"
    out.append(_case("parametrized", "weight_norm Linear: the recomputed weight is the planned identity",
                     make("weight_norm"), lambda m: idinit.init_(m, loose=0.0), "ok", check=wn_check))
    for kind in ("spectral_norm", "orthogonal"):
        out.append(_case("parametrized", f"{kind} Linear: the plan says what is done", make(kind),
                         lambda m: idinit.init_(m, loose=0.0), "ok", check=said_or_done))
    return out

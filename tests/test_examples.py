"""Every script under examples/ runs, on a tiny configuration, and leaves nothing uninitialised (each
script asserts that itself after its init; here its result is checked as well)."""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv", [[], ["--arch", "gpt2", "--eager"]])
def test_hf_causal_lm_from_config(argv):
    pytest.importorskip("transformers")
    result = _load("hf_causal_lm_from_config").main(argv)
    # identity blocks and a near-zero-preserving start: the loss is about log(vocab), as for uniform logits
    # (an embedding of std 0.02 tied to the output keeps the logits small)
    assert abs(result["loss"] - result["log_vocab"]) < 0.5, result


@pytest.mark.parametrize("argv", [["--meta"], ["--model", "resnet18", "--meta"]])
def test_timm_model(argv):
    pytest.importorskip("timm")
    result = _load("timm_model").main(argv)
    assert math.isfinite(result["logit_rms"]) and result["logit_rms"] < 1e-3  # zero-preserving head


@pytest.mark.parametrize("argv", [[], ["--shard-first"]])
def test_meta_fsdp2_runs_as_a_script(argv):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXAMPLES.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, str(EXAMPLES / "meta_fsdp2.py"), *argv], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [float(x) for x in done.stdout.split("losses:")[1].split(",")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert "embed.weight" in done.stdout and "the model's own init: Embedding.reset_parameters()" in done.stdout

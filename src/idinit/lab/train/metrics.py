"""Numbers computed from a run's per-epoch records: the final-epoch accuracy and the epochs to a target
accuracy, the two columns of the paper's Table 1."""
from __future__ import annotations

import math


def final_accuracy(records: list[dict], key: str = "eval_acc") -> float | None:
    """Accuracy after the last epoch (not the best epoch; the last epoch is always evaluated), or
    None when there is no record or the last one has no such accuracy."""
    return records[-1].get(key) if records else None


def epochs_to_target(records: list[dict], target: float = 0.80, key: str = "eval_acc") -> int | None:
    """The first epoch (1-based) whose ``key`` accuracy is at least ``target``; None if never."""
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be in (0, 1], got {target}")
    for record in records:
        value = record.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)) and value >= target:
            return record["epoch"]
    return None


def summarise(records: list[dict], target: float) -> dict:
    """Final accuracies, epochs to ``target``, the best evaluation accuracy and total training time."""
    evals = [r["eval_acc"] for r in records if r.get("eval_acc") is not None]
    return {
        "epochs": records[-1]["epoch"] if records else 0,
        "final_eval_acc": final_accuracy(records, "eval_acc"),
        "final_test1k_acc": final_accuracy(records, "test1k_acc"),
        "epochs_to_target": epochs_to_target(records, target),
        "target_accuracy": target,
        "best_eval_acc": max(evals) if evals else None,
        "train_seconds": sum(r.get("seconds", 0.0) for r in records),
        "diverged": any(r.get("train_loss") is None for r in records),
    }

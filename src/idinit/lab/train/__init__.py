"""Training: one run (:func:`train_run`), its configuration, records and metrics."""
from .config import RunConfig, parse_overrides
from .loop import evaluate, load_run_data, lr_factor, make_optimizer, train_run
from .metrics import epochs_to_target, final_accuracy, summarise
from .records import read_records

__all__ = ["RunConfig", "epochs_to_target", "evaluate", "final_accuracy", "load_run_data", "lr_factor",
           "make_optimizer", "parse_overrides", "read_records", "summarise", "train_run"]

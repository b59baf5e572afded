"""Training: a run alone (:func:`train_run`) or a pack of runs (:func:`train_packed`) through one
loop (:func:`train`), their configuration, run folders, records and metrics.

Module chain: ``config`` (what decides a run's numbers) -> ``records`` (file formats) ->
``run_folder`` (prepare / resume / checkpoint / records / summary) -> ``step`` (what one training
step does) -> ``forward`` (a run alone or a pack: how the logits are computed) -> ``loop``.
"""
from .config import RunConfig, parse_overrides
from .loop import evaluate, load_run_data, train, train_run
from .metrics import epochs_to_target, final_accuracy, summarise
from .packed import train_packed
from .records import read_records
from .run_folder import RunFolder
from .step import lr_factor, make_optimizer

__all__ = ["RunConfig", "RunFolder", "epochs_to_target", "evaluate", "final_accuracy", "load_run_data", "lr_factor",
           "make_optimizer", "parse_overrides", "read_records", "summarise", "train", "train_packed", "train_run"]

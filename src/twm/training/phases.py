"""Where a run is: its phases, in order, saved in each checkpoint."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a run is; saved in each checkpoint so a resume continues at the same place."""

    PREFILL = "prefill"
    PRETRAIN = "pretrain"
    TRAIN = "train"
    FINAL_EVAL = "final_eval"
    DONE = "done"


PHASE_WORDS = {
    Phase.PREFILL: "during the prefill",
    Phase.PRETRAIN: "during pretraining",
    Phase.TRAIN: "during training",
    Phase.FINAL_EVAL: "before the final evaluation",
    Phase.DONE: "after the run",
}

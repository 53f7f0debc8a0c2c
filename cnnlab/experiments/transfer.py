"""transfer: the transferability study of the transfer-learning lectures (Yosinski et al. 2014), run in full
by cnnlab.transfer.study.transfer_study — this entry only hands the experiment's options to it."""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError
from .spec import Experiment


def run_transfer(*, data, quick, seeds, out_dir):
    """cnnlab.transfer.study.transfer_study(data=, quick=, seeds=, out_dir=) → (table rows, plot path)."""
    if importlib.util.find_spec("cnnlab.transfer") is None:
        raise ConfigError("the transfer experiment needs cnnlab.transfer")
    from ..transfer.study import transfer_study

    outcome = transfer_study(data=data, quick=quick, seeds=seeds, out_dir=out_dir)
    rows, plot = (outcome.rows, outcome.plot) if hasattr(outcome, "rows") else outcome
    return rows, plot


EXPERIMENT = Experiment(
    name="transfer",
    title="Transferability of features (Yosinski et al. 2014)",
    summary="the transferability study: copy n layers from a net trained on task A, fine-tune or freeze on B",
    lecture="\"Transfer Learning with CNNs\" [Yosinski et al., NIPS 2014].",
    cells=(),
    columns=(),
    base={},
    quick={},
    delegate=run_transfer,
)

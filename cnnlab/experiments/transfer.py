"""transfer: the transferability study of the transfer-learning lectures (Yosinski et al. 2014), run in full
by cnnlab.transfer.study.transfer_study (also `cnnlab transfer-study`) — this entry hands it the experiment's
options; the study writes its own directory (table.md, results.json, its figure)."""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError
from .spec import Experiment


def run_transfer(*, data, quick, seeds, out_dir, train_options=None):
    """cnnlab.transfer.study.transfer_study on `data` (default digits) into `out_dir`:
    (table rows, plot path, markdown table)."""
    if importlib.util.find_spec("cnnlab.transfer") is None:
        raise ConfigError("the transfer experiment needs cnnlab.transfer")
    from ..transfer.study import transfer_study

    outcome = transfer_study(data=data or "digits", quick=quick, seeds=seeds, out=out_dir,
                             train_options=train_options or None)
    table = outcome.table() if hasattr(outcome, "table") else None
    return outcome.rows, outcome.plot, table


EXPERIMENT = Experiment(
    name="transfer",
    title="Transferability of features (Yosinski et al. 2014)",
    summary="the transferability study: copy n layers from a net trained on task A, fine-tune or freeze on B "
            "(= cnnlab transfer-study)",
    lecture="\"Transfer Learning with CNNs\" [Yosinski et al., NIPS 2014].",
    cells=(),
    columns=(),
    base={},
    quick={},
    delegate=run_transfer,
)

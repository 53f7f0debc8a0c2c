"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per test process: `make test` runs two pytest workers on two cores, and
    two threads each would oversubscribe them (small ops get ~10x slower when OpenMP threads contend).
    Reset after every test because training runs set their own thread count."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run far faster on one thread on a shared, loaded CPU (no thread oversubscription)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)

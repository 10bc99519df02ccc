"""Settings and streams shared by the test modules.

``SMALL`` is the network most tests train (fast, enough to learn digits);
``PROTOCOL`` the benchmark protocol's network and optimizer (docs/protocol.md),
for the tests that check a method's published behaviour at protocol size.
Those are marked ``slow``: ``make test-fast`` leaves them out, ``make test``
runs everything.
"""

import pytest

from skcl.datasets import load_split_digits

SMALL = dict(hidden_layer_sizes=(32,), batch_size=16, device="cpu", random_state=0)
PROTOCOL = dict(hidden_layer_sizes=(256, 256), learning_rate=0.05, momentum=0.9,
                batch_size=32, device="cpu", random_state=0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a protocol-size run (make test-fast skips it)")


@pytest.fixture(scope="session")
def stream():
    """split-digits: 5 experiences of two digits each."""
    return load_split_digits()

"""Settings and streams shared by the test modules.

``SMALL`` is the network most tests train (fast, enough to learn digits);
``PROTOCOL`` the benchmark protocol's network and optimizer (docs/protocol.md),
for the tests that check a method's published behaviour at protocol size.
Those are marked ``slow``: ``make test-fast`` leaves them out, ``make test``
runs everything. ``shared_objects`` lists what a call's checkpoint shares.
"""

import pytest

from skcl._call import SharedExcept
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


def shared_objects(clf) -> list:
    """The objects a call's checkpoint shares with ``clf``: those listed whole, and the
    entries of the partly shared containers outside their own keys."""
    out = []
    for item in clf._shared_with_checkpoint():
        if isinstance(item, SharedExcept):
            out += [part for key, part in item.entries.items() if key not in item.own]
        else:
            out.append(item)
    return out

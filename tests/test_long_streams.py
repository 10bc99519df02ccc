"""Long streams stay bounded: what an estimator keeps, and what a task's training
touches, does not grow with the number of tasks unless the method grows by design.

Each test runs a stream of 60 tiny tasks (two classes, 12 samples each) and
compares state sizes or counts, never wall-clock times; benchmarks/bench_soak.py
measures memory and seconds per task over 1000 tasks.
"""

import copy

import numpy as np
import pytest
import torch
from conftest import shared_objects

from skcl import (
    AGEMClassifier,
    CumulativeClassifier,
    EnsembleClassifier,
    EWCClassifier,
    GDumbClassifier,
    GEMClassifier,
    HATClassifier,
    HyperNetworkClassifier,
    IMMClassifier,
    JointClassifier,
    LatentReplayClassifier,
    LwFClassifier,
    MIRClassifier,
    MultiHeadClassifier,
    NaiveClassifier,
    PackNetClassifier,
    PiggybackClassifier,
    ProgressiveClassifier,
    ReplayClassifier,
)
from skcl.nn import TaskHeads

TINY = dict(hidden_layer_sizes=(8,), batch_size=16, max_epochs=1, device="cpu",
            random_state=0)
N_TASKS = 60


def tiny_tasks(n_tasks=N_TASKS, n_per_task=12, n_features=4, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(n_tasks):
        y = np.repeat([2 * t, 2 * t + 1], n_per_task // 2)
        X = rng.normal(size=(n_per_task, n_features)).astype(np.float32)
        X[:, 0] += y % 2
        yield t, X, y


def run(clf, tasks, epochs=2):
    for t, X, y in tasks:
        for _ in range(epochs):
            clf.partial_fit(X, y, task_id=t)
    return clf


def digests(obj, seen=None) -> int:
    """Call fingerprints (32-hex-digit strings) held anywhere in ``obj``'s state."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (torch.Tensor, np.ndarray, torch.nn.Module)):
        return 0
    seen.add(id(obj))
    if isinstance(obj, str):
        return int(len(obj) == 32 and all(c in "0123456789abcdef" for c in obj))
    if isinstance(obj, dict):
        return sum(digests(v, seen) for v in (*obj.keys(), *obj.values()))
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(digests(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return digests(vars(obj), seen)
    return 0


def tensor_numel(obj, seen=None) -> int:
    """Elements of every tensor reachable from ``obj`` (each tensor counted once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, torch.nn.Module):
        return sum(tensor_numel(t, seen) for t in (*obj.parameters(), *obj.buffers()))
    if isinstance(obj, dict):
        return sum(tensor_numel(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(tensor_numel(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return tensor_numel(vars(obj), seen)
    return 0


# ------------------------------------------------------------------ memories


@pytest.mark.parametrize("cls", [GEMClassifier, AGEMClassifier], ids=lambda c: c.__name__)
def test_episodic_memory_keeps_the_most_recent_tasks(cls):
    clf = cls(memory_size=10, **TINY)
    for t, X, y in tiny_tasks():
        run(clf, [(t, X, y)])
        memory = clf.memory_
        assert len(memory) <= 10
        # Every new task has samples, the oldest are forgotten once tasks outnumber slots.
        assert memory.tasks == list(range(max(0, t - 9), t + 1))
        assert [stop - start for _, start, stop in memory.segments()] == \
            [10 // len(memory.tasks) + (i < 10 % len(memory.tasks))
             for i in range(len(memory.tasks))]
    if cls is GEMClassifier:  # one constraint per remembered task but the open one
        tasks = [t for t in clf.memory_.tasks if t != clf.current_task_]
        assert clf.memory_gradients(tasks).shape[0] == 9


@pytest.mark.parametrize("cls, params", [
    (ReplayClassifier, {"memory_size": 20}),
    (MIRClassifier, {"memory_size": 20, "n_candidates": 8, "k": 4}),
    (GDumbClassifier, {"memory_size": 20, "gdumb_epochs": 1}),
    (LatentReplayClassifier, {"memory_size": 20}),
    (GEMClassifier, {"memory_size": 20}),
    (AGEMClassifier, {"memory_size": 20, "sample_size": 8}),
    (JointClassifier, {}),
    (CumulativeClassifier, {}),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_call_fingerprints_do_not_accumulate(cls, params):
    clf = run(cls(**params, **TINY), tiny_tasks(20), epochs=3)
    # Only the open task's call is remembered (to skip its repeated epochs).
    assert 1 <= digests(clf) <= 2
    memory = clf.memory_
    before = len(memory)
    t, X, y = list(tiny_tasks(20))[-1]
    clf.partial_fit(X, y, task_id=t)  # another epoch of the open task: not stored again
    assert len(memory) == before


# ------------------------------------------------------------------ IMM


@pytest.mark.parametrize("merge", ["mean", "mode"])
def test_imm_state_does_not_grow_with_tasks(merge):
    clf = IMMClassifier(merge=merge, fisher_samples=8, **TINY)
    ratios = []
    for n_tasks in (20, N_TASKS):
        run(clf, list(tiny_tasks(n_tasks))[len(ratios) and 20:])
        clf.end_task()
        ratios.append(tensor_numel(vars(clf)) / tensor_numel(clf.network_))
    # State per network parameter is the same after 20 and after 60 tasks (it was ~2 per
    # task when every solution and Fisher was kept).
    assert ratios[1] == pytest.approx(ratios[0], rel=0.05)
    # A handful of network-sized tensors: network, penalty, sums, merge, initial values.
    assert ratios[1] < 20
    assert clf.moments_.n_solutions == N_TASKS


# ------------------------------------------------------------------ per-task parts


class _CountParameterCopies:
    """Counts the parameters deep-copied while active (checkpoints copy what they keep)."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = torch.nn.Parameter.__deepcopy__

        def counting(param, memo):
            self.n += 1
            return original(param, memo)

        monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", counting)


@pytest.mark.parametrize("cls", [MultiHeadClassifier, EnsembleClassifier],
                         ids=lambda c: c.__name__)
def test_a_task_trains_and_copies_a_bounded_number_of_parameters(cls, monkeypatch):
    clf = cls(**TINY)
    tasks = list(tiny_tasks())
    counter = _CountParameterCopies(monkeypatch)
    trained, copied = [], []
    for t, X, y in tasks:
        counter.n = 0
        run(clf, [(t, X, y)])
        copied.append(counter.n)
        trained.append(sum(p.numel() for group in clf._optimizer_.param_groups
                           for p in group["params"]))
    # The optimizer holds the open task's parts (and the shared trunk) only ...
    assert trained[5] == trained[-1]
    # ... and a call's checkpoint copies the same parameters at task 60 as at task 5.
    assert copied[5] == copied[-1]
    assert len(clf.network_.heads) == N_TASKS


@pytest.mark.parametrize("cls", [MultiHeadClassifier, EnsembleClassifier, PackNetClassifier,
                                 PiggybackClassifier, HATClassifier], ids=lambda c: c.__name__)
def test_a_failed_call_on_a_revisited_task_leaves_its_shared_parts_unchanged(cls):
    clf = run(cls(**TINY), list(tiny_tasks(5)))
    clf.end_task()
    before = {n: p.detach().clone() for n, p in clf.network_.named_parameters()}
    head = clf.network_.heads["2"]
    t, X, y = list(tiny_tasks(5))[2]
    with pytest.raises(FloatingPointError):
        clf.partial_fit(X, y, task_id=t, sample_weight=np.full(len(y), 1e30))
    assert clf.network_.heads["2"] is head
    for name, p in clf.network_.named_parameters():
        assert torch.equal(p, before[name]), name
    # A successful revisit trains a copy of the head; the object a checkpoint shared stays.
    old = copy.deepcopy(head)
    clf.partial_fit(X, y, task_id=t)
    assert clf.network_.heads["2"] is not head
    assert torch.equal(head.weight, old.weight)
    assert not torch.equal(clf.network_.heads["2"].weight, old.weight)


class _CountTensorCopies:
    """Counts the tensors (parameters included) deep-copied while active."""

    def __init__(self, monkeypatch):
        self.n = 0
        for cls in (torch.Tensor, torch.nn.Parameter):
            monkeypatch.setattr(cls, "__deepcopy__", self._counting(cls.__deepcopy__))

    def _counting(self, original):
        def counting(tensor, memo):
            self.n += 1
            return original(tensor, memo)
        return counting


@pytest.mark.parametrize("cls", [GEMClassifier, AGEMClassifier], ids=lambda c: c.__name__)
def test_a_call_copies_a_bounded_number_of_memory_tensors(cls, monkeypatch):
    # memory_size above the number of tasks: every task stays remembered. With one
    # buffer per task, a call's checkpoint copied four tensors more per task seen.
    clf = cls(memory_size=100, **TINY)
    counter = _CountTensorCopies(monkeypatch)
    copied = []
    for t, X, y in tiny_tasks():
        run(clf, [(t, X, y)], epochs=1)
        counter.n = 0
        clf.partial_fit(X, y, task_id=t)
        copied.append(counter.n)
    assert len(clf.memory_.tasks) == N_TASKS
    assert copied[-1] == copied[5]


@pytest.mark.parametrize("cls", [PackNetClassifier, PiggybackClassifier, HATClassifier],
                         ids=lambda c: c.__name__)
def test_a_call_copies_a_bounded_number_of_per_task_tensors(cls, monkeypatch):
    # A call's checkpoint shares the ended tasks' heads, masks and gates: it copied a
    # head's parameters and a mask (or gate) per layer more for every task seen.
    clf = cls(**TINY)
    counter = _CountTensorCopies(monkeypatch)
    copied = []
    for t, X, y in tiny_tasks(30):
        run(clf, [(t, X, y)], epochs=1)
        counter.n = 0
        clf.partial_fit(X, y, task_id=t)
        copied.append(counter.n)
    assert len(clf.network_.heads) == 30
    assert copied[-1] == copied[5]


class _CountParametersNamed:
    """Counts the parameters ``named_parameters`` yields while active."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = torch.nn.Module.named_parameters

        def counting(module, *args, **kwargs):
            for item in original(module, *args, **kwargs):
                self.n += 1
                yield item

        monkeypatch.setattr(torch.nn.Module, "named_parameters", counting)


@pytest.mark.parametrize("cls", [MultiHeadClassifier, EnsembleClassifier],
                         ids=lambda c: c.__name__)
def test_a_new_task_names_only_the_parameters_it_trains(cls, monkeypatch):
    # Each new task makes an optimizer, which names its parameters to carry state later;
    # naming every task's model made a task's cost grow with the tasks before it.
    clf = cls(**TINY)
    counter = _CountParametersNamed(monkeypatch)
    named = []
    for t, X, y in tiny_tasks():
        counter.n = 0
        run(clf, [(t, X, y)])
        named.append(counter.n)
    assert named[-1] == named[5]


def layout(obj, seen=None, path="") -> list:
    """Every value, type and aliasing of ``obj``'s state, in order (callables by type)."""
    seen = {} if seen is None else seen
    if isinstance(obj, (int, float, str, bool, type(None), bytes)):
        return [(path, repr(obj))]
    if id(obj) in seen:
        return [(path, "same as", seen[id(obj)])]
    seen[id(obj)] = path
    if isinstance(obj, torch.Tensor):
        return [(path, type(obj).__name__, obj.dtype, obj.detach().cpu().numpy().tobytes())]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif hasattr(obj, "__dict__") and not callable(obj) or isinstance(obj, torch.nn.Module):
        items = vars(obj).items()
    else:
        return [(path, type(obj).__name__)]
    out = [(path, type(obj).__name__)]
    for key, value in items:
        out += layout(value, seen, f"{path}/{key}")
    return out


@pytest.mark.parametrize("cls", [NaiveClassifier, EWCClassifier, LwFClassifier,
                                 ReplayClassifier, MultiHeadClassifier, EnsembleClassifier,
                                 AGEMClassifier, PackNetClassifier, HATClassifier,
                                 ProgressiveClassifier, HyperNetworkClassifier],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("open_task", [True, False], ids=["task open", "task ended"])
def test_a_checkpoint_is_a_deep_copy_of_the_state(cls, open_task):
    # The checkpoint copies some containers ahead of copy.deepcopy (for speed); what it
    # keeps must be what a plain deep copy would keep, sharing only the shared parts.
    from skcl._call import Checkpoint

    clf = run(cls(**TINY), list(tiny_tasks(4)))
    if not open_task:
        clf.end_task()
    shared = shared_objects(clf)
    plain = copy.deepcopy(vars(clf), {id(obj): obj for obj in shared})
    checkpoint = Checkpoint(clf, clf._shared_with_checkpoint)
    with checkpoint:
        pass
    assert layout(checkpoint.saved) == layout(plain)
    kept = {id(p) for part in shared if isinstance(part, torch.nn.Module)
            for p in part.parameters()}
    originals = {id(p) for p in clf.network_.parameters()} - kept
    copied = [p for p in checkpoint.saved["network_"].parameters()]
    assert not any(id(p) in originals for p in copied)
    assert len(copied) > len(kept) or not open_task
    if isinstance(clf.network_, TaskHeads):  # its ended tasks' heads are shared
        saved = checkpoint.saved["network_"].heads
        same = [key for key in clf.network_.heads if saved[key] is clf.network_.heads[key]]
        ended = [key for key in clf.network_.heads if key != str(clf.current_task_)]
        assert same == ended and len(ended) == (3 if open_task else 4)


@pytest.mark.parametrize(("cls", "params"), [
    (MultiHeadClassifier, {}), (EnsembleClassifier, {}), (PackNetClassifier, {}),
    (HATClassifier, {}), (ReplayClassifier, {"memory_size": 10}),
    (GDumbClassifier, {"memory_size": 10}),
], ids=lambda v: getattr(v, "__name__", ""))
def test_a_checkpoint_handles_a_bounded_number_of_objects(cls, params, monkeypatch):
    # The per-task parts are shared as whole containers (copied at C speed with the same
    # entries): the checkpoint's deep-copy memo, one entry per object it copied or was
    # told to share, held one entry per ended task's parts before. A class-balanced
    # memory smaller than the classes seen forgets a class with no sample left: its table
    # kept an empty entry for every class ever seen.
    import skcl._call

    memos = []
    seed_memo = skcl._call._seed_memo

    def recording(state, memo, *args):
        memos.append(memo)
        return seed_memo(state, memo, *args)

    monkeypatch.setattr(skcl._call, "_seed_memo", recording)
    clf = cls(**TINY, **params)
    sizes = []
    for t, X, y in tiny_tasks():
        run(clf, [(t, X, y)], epochs=1)
        memos.clear()
        clf.partial_fit(X, y, task_id=t)
        sizes.append(len(memos[0]))
    assert len(clf.classes_) == 2 * N_TASKS
    assert sizes[-1] == sizes[5]

"""Must-show properties of the regularization family (METHODS.md) and its shared penalty."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from skcl import (
    EWCClassifier,
    IMMClassifier,
    LwFClassifier,
    MASClassifier,
    NaiveClassifier,
    SIClassifier,
)
from skcl.base import Batch
from skcl.components import stiffness_limit
from skcl.datasets import load_permuted_digits, load_split_digits
from skcl.strategies.imm import mean_imm, mode_imm
from skcl.strategies.importance import ImportancePenalty, TaskSample

SMALL = dict(hidden_layer_sizes=(32,), batch_size=32, device="cpu", random_state=0)
PROTOCOL = dict(hidden_layer_sizes=(256, 256), learning_rate=0.05, momentum=0.9,
                batch_size=32, device="cpu", random_state=0)
# estimator class, the parameter that sets its strength, a positive strength
STRENGTHS = [
    (EWCClassifier, "ewc_lambda", 1e3),
    (SIClassifier, "si_c", 1.0),
    (MASClassifier, "mas_lambda", 1.0),
    (LwFClassifier, "alpha", 1.0),
]
PENALTIES = [(EWCClassifier, {}), (SIClassifier, {}), (MASClassifier, {}),
             (IMMClassifier, {"l2_transfer": 1.0})]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These networks are too small to gain from intra-op threads, and on a shared machine
    busy-waiting OpenMP threads make them several times slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def permuted():
    return load_permuted_digits(n_experiences=3)


@pytest.fixture(scope="module")
def split():
    return load_split_digits()


def train(clf, stream, epochs=2, end=True):
    for exp in stream:
        for _ in range(epochs):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    if end:
        clf.end_task()
    return clf


def params(clf):
    return {n: p.detach().clone() for n, p in clf.network_.named_parameters()}


# ---------------------------------------------------------------- the shared penalty


@pytest.mark.parametrize("cls, extra", PENALTIES, ids=lambda v: getattr(v, "__name__", ""))
def test_penalty_is_zero_on_the_first_task_and_positive_after(cls, extra, permuted):
    clf = cls(**SMALL, **extra)
    train(clf, permuted[:1], end=False)
    assert clf._penalty() is None
    train(clf, permuted[1:2], epochs=1, end=False)
    assert clf._penalty().item() > 0


@pytest.mark.parametrize("cls, extra", PENALTIES, ids=lambda v: getattr(v, "__name__", ""))
def test_anchor_is_a_detached_clone_of_the_task_end_weights(cls, extra, permuted):
    clf = train(cls(**SMALL, **extra), permuted[:1])
    end_of_first = params(clf)
    train(clf, permuted[1:2], end=False)
    live = dict(clf.network_.named_parameters())
    for name, star in clf.anchor_.items():
        assert torch.equal(star, end_of_first[name])
        assert not torch.equal(star, live[name].detach())
        assert star.untyped_storage().data_ptr() != live[name].untyped_storage().data_ptr()
        assert not star.requires_grad


def test_penalty_covers_only_units_that_existed_when_importance_was_computed(split):
    clf = train(EWCClassifier(**SMALL), split[:1])
    assert clf.anchor_["head.weight"].shape[0] == 2
    train(clf, split[1:2], epochs=1, end=False)
    assert clf.network_.head.weight.shape[0] == 4
    clf.network_.zero_grad()
    clf._penalty()
    clf._after_backward(None, None)
    grad = clf.network_.head.weight.grad
    assert grad[:2].abs().sum() > 0
    assert torch.all(grad[2:] == 0)


@pytest.mark.parametrize("cls, extra", [*PENALTIES, (LwFClassifier, {})],
                         ids=lambda v: getattr(v, "__name__", ""))
def test_a_new_task_id_closes_the_task_as_end_task_does(cls, extra, split):
    """partial_fit with a new task id closes the old task before it adds the new task's
    units, so the closing work is that of an explicit end_task."""
    explicit, implicit = cls(**SMALL, **extra), cls(**SMALL, **extra)
    for exp in split[:3]:
        train(explicit, [exp])
        train(implicit, [exp], end=False)
    implicit.end_task()
    X = split[0].X_test
    np.testing.assert_array_equal(implicit.predict_proba(X), explicit.predict_proba(X))
    for name in ("anchor_", "importance_"):
        for key, value in getattr(explicit, name, {}).items():
            assert torch.equal(getattr(implicit, name)[key], value)


def test_stiffness_is_clipped_at_half_the_sgd_stability_limit(split):
    clf = train(EWCClassifier(**SMALL, ewc_lambda=1e6), split[:1])
    train(clf, split[1:2], epochs=1, end=False)
    cap = (1 + clf.momentum) / clf.learning_rate
    for name, k in clf.penalty_.stiffness.items():
        raw = clf.ewc_lambda * clf.importance_[name]
        torch.testing.assert_close(k, raw.clamp(max=cap))
    assert max(k.max().item() for k in clf.penalty_.stiffness.values()) == pytest.approx(cap)
    unclipped = train(EWCClassifier(**SMALL, ewc_lambda=1e6, clip_stiffness=False), split[:1])
    unclipped._open_task(1)  # training at this stiffness would diverge
    assert max(k.max().item() for k in unclipped.penalty_.stiffness.values()) > 100 * cap


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_on_a_quadratic_is_stable_only_below_the_stiffness_limit(momentum):
    """Heavy-ball SGD on k/2 theta^2 converges iff lr k < 2 (1 + momentum): the limit the clip
    keeps every penalty stiffness at half of."""
    lr = 0.05
    limit = 2 * (1 + momentum) / lr
    for k, stable in ((0.98 * limit, True), (1.02 * limit, False)):
        theta = torch.nn.Parameter(torch.ones(1))
        optimizer = torch.optim.SGD([theta], lr=lr, momentum=momentum)
        for _ in range(3000):
            optimizer.zero_grad()
            (0.5 * k * theta.square()).sum().backward()
            optimizer.step()
        assert (abs(theta.item()) < 1e-3) is stable
    assert stiffness_limit("sgd", lr, momentum) == pytest.approx(limit / 2)


@pytest.mark.slow
def test_clip_is_what_keeps_ewc_finite_at_the_protocols_split_lambda(split):
    with pytest.raises(FloatingPointError, match="diverged on task 2"):
        train(EWCClassifier(**PROTOCOL, ewc_lambda=1e4, clip_stiffness=False,
                            normalize_importance=False), split, epochs=5)
    clf = train(EWCClassifier(**PROTOCOL, ewc_lambda=1e4, normalize_importance=False), split,
                epochs=5)
    assert all(torch.isfinite(p).all() for p in clf.network_.parameters())


# ---------------------------------------------------------------- strength 0 is Naive


@pytest.mark.parametrize("cls, name, strength", STRENGTHS, ids=lambda v: getattr(v, "__name__", ""))
def test_zero_strength_is_naive_and_a_positive_one_is_not(cls, name, strength, permuted):
    naive = train(NaiveClassifier(**SMALL), permuted).predict_proba(permuted[0].X_test)
    zero = train(cls(**SMALL, **{name: 0.0}), permuted).predict_proba(permuted[0].X_test)
    np.testing.assert_array_equal(zero, naive)
    positive = train(cls(**SMALL, **{name: strength}), permuted).predict_proba(permuted[0].X_test)
    assert np.abs(positive - naive).max() > 1e-3


# ---------------------------------------------------------------- EWC


def per_sample_fisher(network, X, y):
    fisher = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    network.eval()
    for x, target in zip(X, y, strict=True):
        network.zero_grad()
        F.cross_entropy(network(x[None]), target[None]).backward()
        for n, p in network.named_parameters():
            fisher[n] += p.grad.square()
    return {n: f / len(X) for n, f in fisher.items()}


@pytest.mark.slow
def test_ewc_fisher_is_the_per_sample_definition_not_the_batch_mean_gradient():
    exp = load_permuted_digits(n_experiences=1)[0]
    clf = EWCClassifier(**PROTOCOL, fisher_samples=500)
    for _ in range(5):
        clf.partial_fit(exp.X_train, exp.y_train, task_id=0)
    X, y = clf._task_sample_.tensors()
    assert len(X) == 500
    clf.end_task()
    network = copy.deepcopy(clf.network_)
    reference = per_sample_fisher(network, X, y)
    for n, f in clf.fisher_.items():
        torch.testing.assert_close(f, reference[n], rtol=1e-4, atol=1e-9)
    batch_mean = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    for start in range(0, len(X), 32):
        network.zero_grad()
        F.cross_entropy(network(X[start:start + 32]), y[start:start + 32]).backward()
        for n, p in network.named_parameters():
            batch_mean[n] += p.grad.square()
    n_batches = -(-len(X) // 32)
    ratio = sum(f.sum() for f in clf.fisher_.values()) / (
        sum(b.sum() for b in batch_mean.values()) / n_batches)
    assert ratio > 10  # about 27 here: a batch mean cancels most per-sample gradient


def test_separate_ewc_has_the_gradient_of_one_penalty_per_task(permuted):
    clf = EWCClassifier(**SMALL, ewc_lambda=10.0, normalize_importance=False)
    fishers, anchors = [], []
    for exp in permuted:
        train(clf, [exp])
        fishers.append({n: f.clone() for n, f in clf.fisher_.items()})
        anchors.append(params(clf))
    clf._before_task(99)
    with torch.no_grad():
        for p in clf.network_.parameters():
            p.add_(0.1 * torch.randn_like(p))
    clf.network_.zero_grad()
    clf._penalty()
    clf._after_backward(None, None)
    for n, p in clf.network_.named_parameters():
        expected = sum(clf.ewc_lambda * f[n] * (p.detach() - a[n])
                       for f, a in zip(fishers, anchors, strict=True))
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [EWCClassifier, SIClassifier, MASClassifier])
def test_each_tasks_importance_is_divided_by_its_mean(cls, permuted):
    """The scale-free parametrisation: a task's importance has mean 1, and the paper's
    (normalize_importance=False) is it times the recorded mean."""
    scaled = train(cls(**SMALL), permuted[:1])
    raw = train(cls(**SMALL, normalize_importance=False), permuted[:1])
    (mean,) = scaled.importance_means_
    assert raw.importance_means_ == [mean] and mean > 0
    total = sum(float(t.sum()) for t in scaled.importance_.values())
    count = sum(t.numel() for t in scaled.importance_.values())
    assert total / count == pytest.approx(1.0, rel=1e-4)
    for name, omega in raw.importance_.items():
        torch.testing.assert_close(scaled.importance_[name] * mean, omega)


def test_normalised_strength_does_not_depend_on_the_inputs_scale(permuted):
    """Inputs and their scale change the Fisher's size; normalised, EWC's stiffness at the
    same lambda has the same mean, while the paper's moves with the data."""
    big = [exp.__class__(exp.X_train * 4, exp.y_train, exp.X_test * 4, exp.y_test,
                         task_id=exp.task_id, classes=exp.classes) for exp in permuted[:1]]
    means = {}
    for normalize in (True, False):
        for name, stream in (("unit", permuted[:1]), ("x4", big)):
            clf = train(EWCClassifier(**SMALL, normalize_importance=normalize), stream)
            values = torch.cat([t.flatten() for t in clf.importance_.values()])
            means[normalize, name] = float(values.mean())
    assert means[True, "unit"] == pytest.approx(means[True, "x4"], rel=1e-4)
    assert abs(np.log(means[False, "x4"] / means[False, "unit"])) > 0.1


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_online_ewc_decays_the_running_fisher_with_gamma(gamma, permuted):
    clf = EWCClassifier(**SMALL, mode="online", gamma=gamma, normalize_importance=False)
    train(clf, permuted[:1])
    first = {n: f.clone() for n, f in clf.fisher_.items()}
    train(clf, permuted[1:2])
    end_of_second = params(clf)
    for n, omega in clf.importance_.items():
        torch.testing.assert_close(omega, gamma * first[n] + clf.fisher_[n])
        assert torch.equal(clf.anchor_[n], end_of_second[n])


# ---------------------------------------------------------------- SI


def test_si_path_integral_is_the_task_loss_decrease():
    """Full batch, small steps: sum_i omega_i = -sum_t g.dtheta is the drop of the task loss
    alone over the task (the penalty's own gradient is not counted), to first order."""
    stream = load_permuted_digits(n_experiences=2)
    clf = SIClassifier(hidden_layer_sizes=(32,), batch_size=2000, learning_rate=0.05,
                       momentum=0.0, si_c=1000.0, device="cpu", random_state=0)
    train(clf, stream[:1], epochs=20)
    assert clf.output_units_.labels == list(range(10))
    X, y = torch.from_numpy(stream[1].X_train), torch.from_numpy(stream[1].y_train)

    def task_loss():
        with torch.no_grad():
            return F.cross_entropy(clf.network_(X), y).item()

    before = task_loss()
    train(clf, stream[1:], epochs=40, end=False)
    path = sum(w.sum().item() for w in clf.omega_.values())
    task_drop = before - task_loss()
    total_drop = task_drop - clf._penalty().item()
    assert path == pytest.approx(task_drop, rel=0.02)
    assert path != pytest.approx(total_drop, rel=0.05)


# ---------------------------------------------------------------- MAS


def test_mas_importance_needs_no_labels(permuted):
    clf = train(MASClassifier(**SMALL), permuted[:1], end=False)
    relabelled = copy.deepcopy(clf)
    X, y = relabelled._task_sample_.tensors()
    relabelled._task_sample_.y = torch.randint_like(y, 10)
    clf.end_task()
    relabelled.end_task()
    for n, omega in clf.importance_.items():
        assert torch.equal(omega, relabelled.importance_[n])


# ---------------------------------------------------------------- LwF


def test_lwf_stores_no_samples_only_the_previous_model(split):
    clf = train(LwFClassifier(**SMALL), split[:3])
    n_features = split.n_features
    assert isinstance(clf.previous_network_, torch.nn.Module)
    assert clf.n_old_units_ == 6
    for value in vars(clf).values():
        if isinstance(value, torch.Tensor):
            assert value.dim() < 2 or value.shape[-1] != n_features
    small = len(pickle.dumps(train(LwFClassifier(**SMALL), split[:2])))
    assert len(pickle.dumps(clf)) < small * 1.2


def test_lwf_distils_only_the_old_units(split):
    clf = train(LwFClassifier(**SMALL), split[:1])
    clf.partial_fit(split[1].X_train, split[1].y_train, task_id=1)
    X = torch.from_numpy(split[1].X_train[:8])
    batch = Batch(X, torch.full((8,), 2), None, torch.ones(8, dtype=torch.long))
    logits = clf.network_(X).detach()
    moved = logits.clone()
    moved[:, 2:] += 5.0

    def distillation(z):
        return (clf._loss(z, batch) - F.cross_entropy(z, batch.y)).item()

    assert distillation(logits) > 0
    assert distillation(moved) == pytest.approx(distillation(logits), rel=1e-5)
    moved[:, 0] += 1.0
    assert distillation(moved) != pytest.approx(distillation(logits), rel=1e-3)


# ---------------------------------------------------------------- IMM


def test_mode_imm_with_equal_fisher_is_mean_imm():
    rng = torch.Generator().manual_seed(0)
    solutions = [{"w": torch.randn(4, 3, generator=rng), "b": torch.randn(4, generator=rng)}
                 for _ in range(3)]
    fisher = {"w": torch.rand(4, 3, generator=rng), "b": torch.rand(4, generator=rng)}
    merged_mode = mode_imm(solutions, [fisher] * 3)
    merged_mean = mean_imm(solutions)
    for n in merged_mean:
        torch.testing.assert_close(merged_mode[n], merged_mean[n])
        torch.testing.assert_close(merged_mean[n], sum(s[n] for s in solutions) / 3)


def test_imm_predicts_with_the_merged_solutions(split):
    clfs, solutions = {}, {}
    for merge in ("mean", "mode"):
        clf = IMMClassifier(**SMALL, merge=merge)
        solutions[merge] = [params(train(clf, [exp])) for exp in split[:2]]
        clfs[merge] = clf
    mean, mode = clfs["mean"], clfs["mode"]
    rho = mean.alpha_decay
    # The running sums give the bits of the merge over the list of solutions.
    for name, merged in mean_imm(solutions["mean"], rho).items():
        assert torch.equal(mean.merged_[name], merged)
    equal = [{n: torch.ones_like(p) for n, p in s.items()} for s in solutions["mode"]]
    mode.merged_ = mode_imm(solutions["mode"], equal, rho)
    X = split[0].X_test
    np.testing.assert_allclose(mode.predict_proba(X), mean.predict_proba(X), rtol=1e-5)
    first, second = (s["head.weight"] for s in solutions["mean"])
    # alpha = (rho, 1) / (rho + 1) on the rows both solutions have; the newest's alone.
    torch.testing.assert_close(mean.merged_["head.weight"][:2],
                               (rho * first + second[:2]) / (rho + 1))
    torch.testing.assert_close(mean.merged_["head.weight"][2:], second[2:])
    live = mean.network_(torch.from_numpy(X)).detach().numpy()
    assert not np.allclose(mean.decision_function(X), live)


@pytest.mark.parametrize("decay", [0.0, 0.3, 1.0])
def test_imm_mixing_ratios_are_geometric(decay):
    rng = torch.Generator().manual_seed(0)
    thetas = [{"w": torch.randn(5, generator=rng)} for _ in range(4)]
    fishers = [{"w": torch.rand(5, generator=rng)} for _ in range(4)]
    alpha = torch.tensor([decay ** (3 - k) for k in range(4)])
    alpha = alpha / alpha.sum()
    mean = sum(a * t["w"] for a, t in zip(alpha, thetas, strict=True))
    torch.testing.assert_close(mean_imm(thetas, decay)["w"], mean)
    weighted = sum(a * f["w"] * t["w"] for a, f, t in zip(alpha, fishers, thetas, strict=True))
    total = sum(a * f["w"] for a, f in zip(alpha, fishers, strict=True))
    torch.testing.assert_close(mode_imm(thetas, fishers, decay)["w"], weighted / total)
    if decay == 0:  # only the newest solution is left
        assert torch.equal(mean_imm(thetas, decay)["w"], thetas[-1]["w"])


def test_imm_alpha_decay_zero_predicts_with_the_newest_solution(split):
    clf = train(IMMClassifier(**SMALL, alpha_decay=0.0), split[:3])
    X = split[0].X_test
    live = clf.network_(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(clf.decision_function(X), live, rtol=1e-5, atol=1e-6)
    uniform = train(IMMClassifier(**SMALL, alpha_decay=1.0), split[:3])
    assert not np.allclose(uniform.decision_function(X), live, atol=1e-3)


def test_imm_with_one_task_is_naive(split):
    naive = train(NaiveClassifier(**SMALL), split[:1])
    imm = train(IMMClassifier(**SMALL, merge="mode"), split[:1])
    np.testing.assert_allclose(imm.predict_proba(split[0].X_test),
                               naive.predict_proba(split[0].X_test), rtol=1e-6)


def test_imm_without_weight_transfer_starts_each_task_from_the_initial_weights(split):
    clf = IMMClassifier(**SMALL, weight_transfer=False)
    clf.partial_fit(split[0].X_train, split[0].y_train, task_id=0)
    clf.partial_fit(split[0].X_train, split[0].y_train, task_id=0)
    initial = {n: t.clone() for n, t in clf._initial_.items()}
    clf.end_task()
    clf._open_task(1)
    for n, p in clf.network_.named_parameters():
        torch.testing.assert_close(p.detach()[: initial[n].shape[0]], initial[n])
    transfer = train(IMMClassifier(**SMALL), split[:1])
    end = params(transfer)
    transfer._open_task(1)
    for n, p in transfer.network_.named_parameters():
        assert torch.equal(p.detach(), end[n])


# ---------------------------------------------------------------- protocol, pickle, misc

PAPER = {"normalize_importance": False}
ALL = [  # PROTOCOL.md's strengths, on the papers' unnormalised importances, and the defaults
    (EWCClassifier, {"split-digits": {"ewc_lambda": 1e4, **PAPER},
                     "permuted": {"ewc_lambda": 1e3, **PAPER}}),
    (EWCClassifier, {"*": {"mode": "online", "ewc_lambda": 1e3, **PAPER}}),
    (SIClassifier, {"*": {"si_c": 1.0, **PAPER}}),
    (MASClassifier, {"*": {"mas_lambda": 1.0, **PAPER}}),
    (EWCClassifier, {"*": {}}),
    (SIClassifier, {"*": {}}),
    (MASClassifier, {"*": {}}),
    (LwFClassifier, {"*": {"alpha": 1.0, "T": 2.0}}),
    (IMMClassifier, {"*": {"merge": "mode", "l2_transfer": 1e-2}}),
]


@pytest.mark.slow
@pytest.mark.parametrize("cls, settings", ALL, ids=lambda v: getattr(v, "__name__", ""))
def test_protocol_training_keeps_weights_finite(cls, settings, split):
    for name, stream in (("split-digits", split),
                         ("permuted", load_permuted_digits(n_experiences=3))):
        extra = settings.get(name, settings.get("*"))
        clf = train(cls(**PROTOCOL, **extra), stream, epochs=5)
        assert all(torch.isfinite(p).all() for p in clf.network_.parameters())


@pytest.mark.parametrize("cls, extra", [*PENALTIES, (LwFClassifier, {})],
                         ids=lambda v: getattr(v, "__name__", ""))
def test_state_survives_pickle_mid_task(cls, extra, permuted):
    clf = train(cls(**SMALL, **extra), permuted[:1])
    clf.partial_fit(permuted[1].X_train, permuted[1].y_train, task_id=1)
    copy_ = pickle.loads(pickle.dumps(clf))
    X = permuted[0].X_test
    np.testing.assert_array_equal(copy_.predict_proba(X), clf.predict_proba(X))
    for c in (clf, copy_):
        train(c, permuted[1:])
    np.testing.assert_array_equal(copy_.predict_proba(X), clf.predict_proba(X))


def test_task_sample_is_a_reservoir_of_distinct_calls():
    sample = TaskSample(capacity=50)
    X = torch.arange(200.0).reshape(100, 2)
    y = torch.arange(100)
    sample.add(X, y, None)
    sample.add(X, y, None)
    kept_X, kept_y = sample.tensors()
    assert len(sample) == 50 and sample.n_seen == 100
    assert torch.equal(kept_X[:, 0] / 2, kept_y.float())
    assert len(set(kept_y.tolist())) == 50 and kept_y.max() >= 50
    sample.add(X[:10], y[:10], torch.zeros(10))
    assert sample.n_seen == 100
    assert issubclass(EWCClassifier, ImportancePenalty)

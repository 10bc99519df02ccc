"""Must-show properties of iCaRL (METHODS.md): herding exemplars, NME prediction, distillation."""

import numpy as np
import torch
from conftest import SMALL
from torch.nn import functional as F

from skcl import ICaRLClassifier
from skcl._guard import float64_copy
from skcl.base import Batch
from skcl.kernels import herding


def features(clf, X, float64=False):
    clf.network_.eval()
    with torch.no_grad():
        X = torch.as_tensor(X)
        out = (float64_copy(clf.network_).features(X.double()) if float64
               else clf.network_.features(X))
        return F.normalize(out, dim=1)


def unit(clf, label):
    return clf.output_units_.of(label)


def test_exemplar_sets_are_the_herding_kernel_output_and_shrink_to_prefixes(stream):
    clf = ICaRLClassifier(memory_size=40, **SMALL)
    exp = stream[0]
    for _ in range(2):
        clf.partial_fit(exp.X_train, exp.y_train, task_id=0)
    clf.end_task()
    first = {}
    for label in exp.classes:
        X_c = exp.X_train[exp.y_train == label]
        picks = herding(features(clf, X_c).contiguous(), 20)
        first[label] = X_c[picks.numpy()]
        np.testing.assert_array_equal(clf.exemplars_.exemplars(unit(clf, label)).X.numpy(),
                                      first[label])
    exp = stream[1]
    clf.partial_fit(exp.X_train, exp.y_train, task_id=1)
    clf.end_task()
    assert clf.exemplars_.counts() == {unit(clf, c): 10 for c in range(4)}
    for label in (0, 1):  # reduced: the first m = 40 // 4 of the herding order
        np.testing.assert_array_equal(clf.exemplars_.exemplars(unit(clf, label)).X.numpy(),
                                      first[label][:10])
    for label in exp.classes:
        X_c = exp.X_train[exp.y_train == label]
        picks = herding(features(clf, X_c).contiguous(), 10)
        np.testing.assert_array_equal(clf.exemplars_.exemplars(unit(clf, label)).X.numpy(),
                                      X_c[picks.numpy()])


def test_prediction_is_the_nearest_mean_of_exemplars(stream):
    clf = ICaRLClassifier(memory_size=60, **SMALL)
    for exp in stream[:3]:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    clf.end_task()
    X = np.vstack([exp.X_test for exp in stream[:3]])
    means = torch.stack([
        F.normalize(features(clf, clf.exemplars_.exemplars(unit(clf, c)).X, True).mean(0), dim=0)
        for c in clf.classes_
    ])
    distance = torch.cdist(features(clf, X, float64=True), means)
    nearest = distance.argmin(1).numpy()
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[nearest])
    np.testing.assert_allclose(clf.decision_function(X), -distance.numpy(), rtol=1e-12)
    # The network's own outputs would answer differently: NME is what predicts.
    with torch.no_grad():
        network_pred = clf.classes_[clf.network_(torch.as_tensor(X)).argmax(1).numpy()]
    assert (network_pred != clf.predict(X)).any()
    # Changing only the exemplars changes the predictions.
    label = clf.classes_[0]
    rows = clf.exemplars_._sets[unit(clf, label)]
    rows.X[:] = torch.as_tensor(stream[2].X_train[: rows.size])
    assert (clf.predict(X) != clf.classes_[nearest]).any()


def test_open_task_classes_use_the_mean_of_their_samples(stream):
    clf = ICaRLClassifier(memory_size=40, **SMALL)
    clf.partial_fit(stream[0].X_train, stream[0].y_train, task_id=0)
    units, _ = clf.class_means()  # no exemplars yet: means over the task's samples
    assert units.tolist() == [0, 1]
    assert len(clf.exemplars_) == 0
    assert clf.score(stream[0].X_test, stream[0].y_test) > 0.9


def test_distillation_targets_are_the_old_network_outputs(stream):
    clf = ICaRLClassifier(memory_size=40, **SMALL)
    clf.partial_fit(stream[0].X_train, stream[0].y_train, task_id=0)
    clf.end_task()
    exp = stream[1]
    clf.partial_fit(exp.X_train, exp.y_train, task_id=1)
    X = torch.as_tensor(exp.X_train[:8])
    y = torch.tensor([unit(clf, label) for label in exp.y_train[:8]])
    logits = clf.network_(X)
    with torch.no_grad():
        q = torch.sigmoid(clf._old_network_(X))
    targets = F.one_hot(y, 4).float()
    targets[:, :2] = q[:, :2]
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
    loss = clf._loss(logits, Batch(X, y, None, torch.ones(8, dtype=torch.long)))
    torch.testing.assert_close(loss, expected)
    assert clf._old_network_.n_units == 2


def test_icarl_keeps_old_classes_in_class_incremental(stream):
    clf = ICaRLClassifier(memory_size=100, **SMALL)
    for exp in stream:
        for _ in range(2):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    clf.end_task()
    assert len(clf.exemplars_) == 100
    assert clf.score(stream[0].X_test, stream[0].y_test) > 0.7

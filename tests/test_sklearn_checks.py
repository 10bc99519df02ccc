"""sklearn's conformance suite on every skcl estimator, with its small test settings."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import skcl
from skcl.base import ContinualClassifier

ESTIMATORS = [
    getattr(skcl, name)
    for name in skcl.__all__
    if isinstance(getattr(skcl, name), type)
    and issubclass(getattr(skcl, name), ContinualClassifier)
    and getattr(skcl, name) is not ContinualClassifier
]

# Checks an estimator may fail, with the reason a reviewer can check.
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "mini-batch SGD: an integer sample weight scales a sample's loss in its one "
        "mini-batch, while repeating the sample puts copies in other mini-batches and "
        "changes the shuffling, so the two trainings differ (sklearn marks "
        "SGDClassifier the same way)"
    ),
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILURES


@parametrize_with_checks(
    [cls(**cls._unit_test_params()) for cls in ESTIMATORS],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_every_public_estimator_is_checked():
    names = {cls.__name__ for cls in ESTIMATORS}
    assert {"NaiveClassifier", "JointClassifier", "CumulativeClassifier",
            "EnsembleClassifier", "MultiHeadClassifier"} <= names


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_docstring_has_example(cls):
    assert "Examples\n    --------\n    >>>" in cls.__doc__

"""
Grid search over a skcl estimator
=================================

skcl estimators are scikit-learn estimators, so
:class:`~sklearn.model_selection.GridSearchCV` can tune them. The task id of
every sample reaches them through scikit-learn's metadata routing: each
estimator requests ``task_id`` in ``fit`` and ``score``, and the grid search
routes each fold's share of the ids.

Hyperparameters must not be chosen on the test sets of the stream. Here the
search runs cross-validation on the *training* data of the first three
tasks only, then the chosen setting is evaluated on the whole stream.

Cross-validation mixes the tasks' samples into folds and scores single
models; :class:`skcl.model_selection.StreamGridSearch` instead scores each
candidate's whole accuracy matrix on validation splits of the stream, and
is the better fit when forgetting is what you tune against.
"""

# %%
# Training data of the first tasks, with one task id per sample
# -------------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import sklearn
from sklearn.model_selection import GridSearchCV

from skcl import ReplayClassifier
from skcl.datasets import load_split_digits
from skcl.evaluation import evaluate_stream

stream = load_split_digits()
tuning = stream[:3]
X = np.vstack([exp.X_train for exp in tuning])
y = np.concatenate([exp.y_train for exp in tuning])
task_id = np.concatenate([np.full(len(exp.y_train), exp.task_id) for exp in tuning])

# %%
# The search
# ----------
# ``fit(X, y, task_id=...)`` resets the estimator and learns the tasks in
# order of first appearance, ``max_epochs`` epochs each, so every fold
# replays the stream's order. By default ``score`` would receive the task
# ids too and score task-incrementally; ``set_score_request(task_id=False)``
# makes the search score class-incrementally, the scenario we tune for.
sklearn.set_config(enable_metadata_routing=True)

estimator = ReplayClassifier(hidden_layer_sizes=(32,), max_epochs=2, random_state=0)
estimator.set_score_request(task_id=False)
grid = {"memory_size": [20, 100], "learning_rate": [0.01, 0.05]}
search = GridSearchCV(estimator, grid, cv=3)
search.fit(X, y, task_id=task_id)

for params, mean, std in zip(search.cv_results_["params"],
                             search.cv_results_["mean_test_score"],
                             search.cv_results_["std_test_score"], strict=True):
    print(f"{params}: {mean:.3f} +- {std:.3f}")
print("best:", search.best_params_)

sklearn.set_config(enable_metadata_routing=False)

# %%
# The chosen setting on the whole stream
# --------------------------------------
# ``best_estimator_`` was refitted on all tuning data; a clone of it (same
# parameters, no fitted state) learns the whole stream, scored on the test
# sets only now.
from sklearn.base import clone  # noqa: E402

result = evaluate_stream(clone(search.best_estimator_), stream, scenario="class")
print(result.summary_line())
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
result.plot(ax=axes)

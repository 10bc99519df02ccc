"""
The streaming loop, beside SGDClassifier
========================================

A skcl estimator is trained with the same ``partial_fit`` loop as
scikit-learn's :class:`~sklearn.linear_model.SGDClassifier`. Three things
differ: the skcl estimator takes the ``task_id`` of each piece of the
stream, it grows its output layer as new classes arrive (no ``classes=``
needed), and ``end_task()`` runs the end-of-task work of the last task.

Both models learn split-digits, five tasks of two digits each, one task
after the other. Neither protects what earlier tasks taught, so both forget
in the class-incremental setting, where all ten digits compete.
"""

# %%
# The stream and the two models
# -----------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import SGDClassifier

from skcl import NaiveClassifier
from skcl.datasets import load_split_digits

stream = load_split_digits()
print(stream)
for exp in stream:
    print(exp)

sgd = SGDClassifier(random_state=0)
naive = NaiveClassifier(hidden_layer_sizes=(64,), random_state=0)

# %%
# The loop
# --------
# ``partial_fit`` is one epoch for both. ``SGDClassifier`` needs every class
# on its first call; the skcl estimator needs the task id instead.
epochs = 3
first_task_accuracy = {"SGDClassifier": [], "NaiveClassifier": []}
for exp in stream:
    for _ in range(epochs):
        sgd.partial_fit(exp.X_train, exp.y_train, classes=stream.classes)
        naive.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    first_task_accuracy["SGDClassifier"].append(sgd.score(stream[0].X_test, stream[0].y_test))
    first_task_accuracy["NaiveClassifier"].append(
        naive.score(stream[0].X_test, stream[0].y_test))
naive.end_task()

print("classes seen by the skcl estimator:", naive.classes_)
print("tasks seen:", naive.tasks_seen_)

# %%
# Class-incremental and task-incremental predictions
# --------------------------------------------------
# Without ``task_id`` every class seen competes. With it, only the task's
# classes do, which is a much easier question.
X0, y0 = stream[0].X_test, stream[0].y_test
print("task 0, class-incremental:", naive.score(X0, y0))
print("task 0, task-incremental: ", naive.score(X0, y0, task_id=0))
print("predictions without / with task id:", naive.predict(X0[:8]),
      naive.predict(X0[:8], task_id=0))

# %%
# Forgetting of the first task
# ----------------------------
fig, ax = plt.subplots(figsize=(6, 3.5))
steps = np.arange(len(stream))
for name, values in first_task_accuracy.items():
    ax.plot(steps, values, marker="o", label=name)
ax.set_xticks(steps)
ax.set_xlabel("after training task")
ax.set_ylabel("accuracy on task 0 (class-incremental)")
ax.set_ylim(-0.05, 1.05)
ax.legend()
fig.tight_layout()

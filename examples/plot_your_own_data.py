"""
Comparing methods on your own data
==================================

Any labelled table can become a stream. This example writes a small CSV
file, reads it back, splits it into tasks of two classes with
:func:`skcl.datasets.make_split_stream`, and compares three methods with
:func:`skcl.evaluation.evaluate_stream`, which fills the accuracy matrix
``R[i, j]`` (accuracy on task ``j`` after training task ``i``).
"""

# %%
# A CSV file of your own
# ----------------------
# Here the file is made from scikit-learn's synthetic classification data;
# in practice it is your data. The last column is the label.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_classification

folder = Path(tempfile.mkdtemp())
X, y = make_classification(n_samples=1200, n_features=12, n_informative=8, n_classes=6,
                           n_clusters_per_class=1, class_sep=2.0, random_state=0)
labels = np.array(["ant", "bee", "cat", "dog", "eel", "fox"])[y]
with open(folder / "animals.csv", "w") as f:
    f.write(",".join([f"x{i}" for i in range(12)] + ["label"]) + "\n")
    for row, label in zip(X, labels, strict=True):
        f.write(",".join(f"{v:.5f}" for v in row) + f",{label}\n")

# %%
# Read it back and build a stream
# -------------------------------
table = np.genfromtxt(folder / "animals.csv", delimiter=",", names=True, dtype=None,
                      encoding="utf-8")
features = [name for name in table.dtype.names if name != "label"]
X = np.column_stack([table[name] for name in features]).astype(np.float32)
y = table["label"]

from skcl.datasets import make_split_stream  # noqa: E402

stream = make_split_stream(X, y, classes_per_task=2, name="animals")
for exp in stream:
    print(exp)

# %%
# Three methods, one stream
# -------------------------
# Naive fine-tuning forgets; replay keeps a small buffer of old samples;
# EWC penalises changes to weights that mattered for earlier tasks. Each is
# scored class-incrementally (no task id at test). The settings are small so
# the example runs in seconds.
from skcl import EWCClassifier, NaiveClassifier, ReplayClassifier  # noqa: E402
from skcl.evaluation import evaluate_stream, format_table, warm_up  # noqa: E402

warm_up()  # pay torch's one-time start-up costs before anything is timed
small = dict(hidden_layer_sizes=(32,), random_state=0)
estimators = [
    NaiveClassifier(**small),
    ReplayClassifier(memory_size=60, **small),
    EWCClassifier(ewc_lambda=1e3, **small),
]
results = [evaluate_stream(est, stream, scenario="class", epochs=3) for est in estimators]
print(format_table(results))

# %%
# The accuracy matrices
# ---------------------
# Each result draws its matrix and the accuracy of every task over time.
# Under Naive the old tasks' columns drop to zero after the next task; the
# replay buffer keeps them up. EWC ends close to Naive: in a class-incremental
# stream the new classes' output units win over the old ones whatever the
# penalty protects, which is why replay-style methods suit this scenario.
for result in results:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    result.plot(ax=axes)

# %%
# Saving a result
# ---------------
# A result is plain data: it saves as JSON and loads back.
from skcl.evaluation import StreamResult  # noqa: E402

path = folder / "replay.json"
results[1].to_json(path)
print(StreamResult.from_json(path).summary_line())

"""Streams from data files: CSV and Parquet tables (through pandas) and ``.npz`` arrays.

:func:`load_streams` is what ``skcl run --data`` and ``skcl bench --data``
call. A file becomes one stream per way asked of cutting it into
experiences: by a task column (:func:`skcl.datasets.make_task_stream`'s
rule), by groups of classes (:func:`~skcl.datasets.make_split_stream`'s) or
as feature permutations (:func:`~skcl.datasets.make_permuted_stream`'s).

Rules for tables (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``):

- The target column holds class labels: integers, strings, or floats that
  are whole numbers. Continuous values or a missing label are errors.
- The task column (optional) may hold numbers or strings, none missing;
  experience ``t`` holds the rows of its ``t``-th smallest value.
- Every other column not dropped is a feature. Numbers (and booleans) are
  standardised with the mean and standard deviation of the training rows
  (a constant column becomes 0). Any other column (strings, categories,
  dates) is one-hot encoded: one 0/1 feature per value seen in the training
  rows, in sorted order; a value seen only in test rows sets none of them.
  A column with more than :data:`MAX_CATEGORIES` values is an error (an
  identifier or free text: drop it).
- A missing feature value is an error naming the column, unless ``impute``:
  then a missing number becomes the median of the column's training rows
  (before standardising) and a missing category sets none of its features.

Rules for ``.npz`` files: the array ``X`` (n_samples, n_features) is used as
it is (no scaling; NaN is an error), ``target`` names the label array
(default ``'y'``) and ``task_column`` the array of task values.

Train and test rows are split once per stream, stratified by class (per
task with a task column), by ``random_state``: the same seed gives the same
split. Encoders and imputation use the training rows only.

Examples
--------
>>> import pathlib, tempfile
>>> import pandas as pd
>>> from skcl.tabular import load_streams
>>> table = pd.DataFrame({"size": [1.0, 2.0, 3.0, 4.0] * 6,
...                       "colour": ["red", "blue", "red", None] * 6,
...                       "label": ["a", "b", "c", "d"] * 6,
...                       "year": [2020] * 12 + [2021] * 12})
>>> with tempfile.TemporaryDirectory() as d:
...     path = pathlib.Path(d, "shop.csv")
...     table.to_csv(path, index=False)
...     stream, = load_streams(path, target="label", task_column="year", impute=True)
>>> stream.name, len(stream), stream.n_features    # size, colour=blue, colour=red
('shop-tasks', 2, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skcl.datasets import (
    TaskStream,
    _check_X_y,
    _class_experiences,
    _no_id_scenario,
    _permuted_experiences,
    _positive_int,
    _resolve_task_classes,
    _split_indices,
    _task_experiences,
)

__all__ = ["MAX_CATEGORIES", "DataError", "load_streams"]

#: Most distinct values a text column may have to be one-hot encoded.
MAX_CATEGORIES = 100
_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_HINT = "pip install pyarrow"


class DataError(ValueError):
    """A data file that cannot become a stream; the message is one line naming the problem."""


def load_streams(
    path: str | os.PathLike,
    target: str | None = None,
    task_column: str | None = None,
    classes_per_task: int | None = None,
    permuted: int | None = None,
    drop: Sequence[str] = (),
    impute: bool = False,
    test_size: float = 0.3,
    random_state: int = 0,
) -> list[TaskStream]:
    """Streams from a CSV, Parquet or ``.npz`` file (rules in :mod:`skcl.tabular`).

    Parameters
    ----------
    path : str or path-like
        ``.csv`` (optionally ``.gz``), ``.parquet``/``.pq`` (needs pyarrow)
        or ``.npz``.
    target : str, optional
        Label column; required for tables, ``'y'`` for ``.npz`` when not given.
    task_column : str, optional
        Build a stream with one experience per value of this column, named
        ``'<file stem>-tasks'``.
    classes_per_task : int, optional
        Build a stream of this many classes per experience (labels in sorted
        order), named ``'<file stem>-split'``.
    permuted : int, optional
        Build a stream of this many feature permutations, named
        ``'<file stem>-permuted'``.
    drop : sequence of str, default=()
        Columns of a table to leave out.
    impute : bool, default=False
        Fill missing feature values instead of raising.
    test_size : float, default=0.3
        Share of each stream's rows held out for testing.
    random_state : int, default=0
        Seed of the train/test split.

    Returns
    -------
    streams : list of TaskStream
        The task, split and permuted streams, in that order, for those asked.

    Raises
    ------
    DataError
        An unreadable file, a missing column, missing values, continuous
        labels, a class too small to split; the message names the column.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from skcl.tabular import load_streams
    >>> rng = np.random.default_rng(0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     np.savez(f"{d}/toy.npz", X=rng.normal(size=(60, 4)), y=np.arange(60) % 4)
    ...     streams = load_streams(f"{d}/toy.npz", classes_per_task=2, permuted=3)
    >>> [(s.name, len(s)) for s in streams]
    [('toy-split', 2), ('toy-permuted', 3)]
    """
    path = Path(path)
    if task_column is None and classes_per_task is None and permuted is None:
        raise DataError(f"{path}: say how to cut it into experiences: a task column, "
                        "classes per task or a number of permutations")
    try:
        k = None if classes_per_task is None else _positive_int(classes_per_task,
                                                                "classes per task")
        n = None if permuted is None else _positive_int(permuted, "the number of permutations")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    stem = path.name.split(".")[0]
    features, y, task = _read(path, target, task_column, drop)
    streams = []

    def build(name: str, by_task: bool, make) -> None:
        try:
            train, test = _split_indices(y, test_size, random_state,
                                         task=task if by_task else None)
        except ValueError as exc:
            where = " within a task" if by_task else ""
            raise DataError(f"{path}: cannot split the rows into train and test stratified by "
                            f"class{where} (every class needs 2 rows or more): {exc}") from None
        X = _encode(features, train, impute, path)
        experiences = make(X, train, test)
        streams.append(TaskStream(experiences, name=f"{stem}-{name}",
                                  default_scenario=_no_id_scenario(experiences)))

    if task is not None:
        build("tasks", True, lambda X, tr, te: _task_experiences(X, y, tr, te, task))
    if k is not None:
        groups = _resolve_task_classes(np.unique(y), k, None)
        build("split", False, lambda X, tr, te: _class_experiences(X, y, tr, te, groups))
    if n is not None:
        build("permuted", False, lambda X, tr, te: _permuted_experiences(X, y, tr, te, n))
    return streams


def _read(path: Path, target, task_column, drop):
    """``(features, labels, task values or None)``; features a DataFrame or an array."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes.pop()
    kind = ".npz" if suffixes[-1:] == [".npz"] else _TABLE_SUFFIXES.get(
        suffixes[-1] if suffixes else "")
    if kind is None:
        raise DataError(f"{path}: unknown file type; expected .csv, .csv.gz, .parquet, .pq "
                        "or .npz")
    if kind == ".npz":
        if drop:
            raise DataError(f"{path}: columns are dropped from tables, not from .npz files")
        return _read_npz(path, target or "y", task_column)
    if target is None:
        raise DataError(f"{path}: name the label column (--target COLUMN)")
    table = _read_table(path, kind)
    wanted = [target, *([task_column] if task_column is not None else []), *drop]
    absent = [c for c in wanted if c not in table.columns]
    if absent:
        raise DataError(f"{path} has no column {absent[0]!r}; columns: "
                        f"{', '.join(map(str, table.columns))}")
    if task_column == target:
        raise DataError(f"{path}: column {target!r} cannot be both the target and the task")
    y = _labels(table[target], target, path)
    task = None if task_column is None else _task_values(table[task_column], task_column, path)
    features = table.drop(columns=list(dict.fromkeys(wanted)))
    if features.shape[1] == 0:
        raise DataError(f"{path}: no feature column is left besides the target, the task "
                        "column and those dropped")
    return features, y, task


def _read_table(path: Path, kind: str):
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"reading {path} needs pandas: pip install pandas") from None
    try:
        if kind == "csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(f"reading Parquet ({path}) needs pyarrow: {_PARQUET_HINT} "
                        f"({' '.join(str(exc).split())})") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path} as {kind}: {' '.join(str(exc).split())}") from None


def _read_npz(path: Path, target: str, task_column):
    names = ["X", target, *([task_column] if task_column is not None else [])]
    try:
        with np.load(path, allow_pickle=False) as data:
            absent = [k for k in names if k not in data.files]
            if absent:
                raise DataError(f"{path} has no array {', '.join(absent)} "
                                f"(arrays: {', '.join(data.files) or 'none'})")
            X, y, *rest = (data[k] for k in names)
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {path} as an .npz file: {exc}") from exc
    try:
        X, y = _check_X_y(X, y)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    task = None
    if rest:
        task = rest[0]
        if task.shape != y.shape or (task.dtype.kind == "f" and not np.isfinite(task).all()):
            raise DataError(f"{path}: array {task_column!r} must hold one finite task value "
                            f"per row of X ({len(y)}), got shape {task.shape}")
    return X, y, task


def _labels(column, name: str, path: Path) -> np.ndarray:
    import pandas as pd

    missing = int(column.isna().sum())
    if missing:
        raise DataError(f"{path}: target column {name!r} has {missing} missing values; "
                        "remove those rows")
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_integer_dtype(column):
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise DataError(f"{path}: target column {name!r} holds continuous values; skcl "
                            "classifies, its target must hold class labels")
        return values.astype(np.int64)
    return column.astype(str).to_numpy(dtype=str)


def _task_values(column, name: str, path: Path) -> np.ndarray:
    import pandas as pd

    missing = int(column.isna().sum())
    if missing:
        raise DataError(f"{path}: task column {name!r} has {missing} missing values")
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    return column.astype(str).to_numpy(dtype=str)


def _encode(features, train: np.ndarray, impute: bool, path: Path) -> np.ndarray:
    """The feature matrix (float32), its encoders fitted on the ``train`` rows."""
    if isinstance(features, np.ndarray):
        return features
    import pandas as pd

    blocks = []
    for name in features.columns:
        column = features[name]
        missing = column.isna().to_numpy()
        if missing.any() and not impute:
            raise DataError(f"{path}: column {name!r} has {int(missing.sum())} missing values; "
                            f"impute them (--impute) or drop the column (--drop {name})")
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            blocks.append(_standardised(column.to_numpy(dtype=np.float64, na_value=np.nan),
                                        missing, train, name, path))
        else:
            blocks.append(_one_hot(column, missing, train, name, path))
    return np.ascontiguousarray(np.hstack(blocks), dtype=np.float32)


def _standardised(values, missing, train, name, path) -> np.ndarray:
    if np.isinf(values).any():
        raise DataError(f"{path}: column {name!r} holds infinite values")
    if missing.any():
        seen = values[train][~missing[train]]
        if not seen.size:
            raise DataError(f"{path}: column {name!r} has no value in the training rows to "
                            "impute from; drop it (--drop)")
        values = np.where(missing, np.median(seen), values)
    mean, std = values[train].mean(), values[train].std()
    return ((values - mean) / (std if std > 0 else 1.0))[:, None]


def _one_hot(column, missing, train, name, path) -> np.ndarray:
    values = column.astype(str).to_numpy(dtype=object)
    values[missing] = None
    categories = sorted({v for v in values[train] if v is not None})
    if len(categories) > MAX_CATEGORIES:
        raise DataError(f"{path}: text column {name!r} has {len(categories)} distinct values "
                        f"in the training rows (at most {MAX_CATEGORIES} are one-hot encoded); "
                        f"drop it (--drop {name}) or encode it yourself")
    return (values[:, None] == np.array(categories, dtype=object)[None, :]).astype(np.float64)

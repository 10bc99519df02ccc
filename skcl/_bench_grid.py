"""What a benchmark grid holds: estimators, streams, scenarios, parameters.

The implementation behind :mod:`skcl.bench`'s grid definition (its public
names are re-exported there): the estimator specs, the sklearn baselines,
the scenario rule, settings files and the resolution of every cell's
parameters.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import runpy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from skcl import registry
from skcl.base import ContinualClassifier
from skcl.datasets import SCENARIOS, TaskStream, _no_id_scenario

#: Rows of a stream's first experience :func:`try_estimator` fits on.
_TRY_ROWS = 8


class BenchError(ValueError):
    """A problem with the grid itself (unknown name, bad parameter, missing extra).

    Its message is one line, meant for the user as it is.
    """


@dataclass(frozen=True)
class _Spec:
    """How to build one estimator of the grid."""

    name: str
    label: str
    module: str
    cls: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # skcl parameter name -> this estimator's; None: every parameter it has, same name.
    translate: Mapping[str, str] | None = None

    def make_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)

    def valid_params(self) -> list[str]:
        return sorted(self.make_class()().get_params())


_MLP_DEFAULTS = dict(hidden_layer_sizes=(256, 256), solver="sgd", learning_rate_init=0.05,
                     momentum=0.9, nesterovs_momentum=False, batch_size=32, alpha=0.0)
_MLP_TRANSLATE = {"hidden_layer_sizes": "hidden_layer_sizes", "learning_rate": "learning_rate_init",
                  "momentum": "momentum", "batch_size": "batch_size", "optimizer": "solver"}
_SKLEARN = {
    "sgd": _Spec("sgd", "sklearn SGD", "sklearn.linear_model", "SGDClassifier", {}, {}),
    "mlp": _Spec("mlp", "sklearn MLP", "sklearn.neural_network", "MLPClassifier",
                 _MLP_DEFAULTS, _MLP_TRANSLATE),
}


def _specs(settings: Mapping[str, Any] | None = None) -> dict[str, _Spec]:
    """Every estimator of ``'all'``: skcl's, each followed by its variants, then sklearn's."""
    base = {
        entry.name: _Spec(entry.name, entry.cls.removesuffix("Classifier"), "skcl", entry.cls)
        for entry in registry.ENTRIES
    }
    variants = (settings or {}).get("variants", {})
    specs = {}
    for name in base:
        for variant, info in variants.items():
            if info["estimator"] == name and variant != name and variant in {**base, **_SKLEARN}:
                raise BenchError(f"settings: variant {info['label']!r} would be named "
                                 f"{variant!r}, which is an estimator's name")
        specs[name] = replace(base[name], label=variants.get(name, {}).get("label",
                                                                        base[name].label))
        specs.update({variant: replace(base[name], name=variant, label=info["label"])
                      for variant, info in variants.items()
                      if info["estimator"] == name and variant != name})
    return {**specs, **_SKLEARN}


def _key(name: str) -> str:
    """A grid name: a registry estimator's name for any of its spellings, else lower case."""
    entry = registry.find(name)
    return entry.name if entry else str(name).strip().lower().removesuffix("classifier")


def estimator_names() -> list[str]:
    """Names ``--estimators all`` stands for: every skcl estimator, then ``'sgd'``, ``'mlp'``.

    Returns
    -------
    names : list of str
        The skcl estimators in :data:`skcl.registry.ENTRIES` order (``'naive'``
        and ``'joint'`` first), then the scikit-learn baselines.

    Examples
    --------
    >>> from skcl.bench import estimator_names
    >>> names = estimator_names()
    >>> names[:2], names[-2:]
    (['naive', 'joint'], ['sgd', 'mlp'])
    """
    return list(_specs())


def try_estimator(estimator, stream: TaskStream) -> None:
    """Fit a clone on a few rows of a stream, so that what the estimator's own checks
    reject (parameter constraints, layer sizes, an absent device) fails before a run.

    Parameters
    ----------
    estimator : skcl or scikit-learn classifier with ``partial_fit``
    stream : TaskStream
        The clone learns the first rows of its first experience.

    Raises
    ------
    BenchError
        For a ``ValueError`` or ``TypeError`` of the estimator (scikit-learn's
        ``InvalidParameterError`` included), in one line naming its class. Any
        other exception is left to the run, which reports it.

    Examples
    --------
    >>> from skcl import NaiveClassifier
    >>> from skcl.bench import try_estimator
    >>> from skcl.datasets import load_split_digits
    >>> try_estimator(NaiveClassifier(learning_rate=-1.0), load_split_digits())
    Traceback (most recent call last):
    ...
    skcl._bench_grid.BenchError: NaiveClassifier: The 'learning_rate' parameter of ...
    """
    exp = stream[0]
    extra = ({"task_id": exp.task_id} if isinstance(estimator, ContinualClassifier)
             else {"classes": stream.classes})
    try:
        with warnings.catch_warnings():  # about the few rows, not about the run
            warnings.simplefilter("ignore")
            clone(estimator).partial_fit(exp.X_train[:_TRY_ROWS], exp.y_train[:_TRY_ROWS],
                                         **extra)
    except (ValueError, TypeError) as exc:
        raise BenchError(f"{type(estimator).__name__}: {' '.join(str(exc).split())}") from None
    except Exception:  # a diverging loss or a bug: the run raises it and reports it
        return


def stream_scenarios(stream: TaskStream, requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """The scenarios a stream is scored in, from those asked for, with the reasons.

    The rule:

    - ``'task'`` (task id given at test) runs on every stream whose
      experiences have distinct task ids, permuted streams included: there
      the task id tells which permutation a sample comes from, and all of the
      stream's classes compete.
    - The scenario without a task id at test is named after the stream:
      ``'domain'`` when every experience holds the same classes (permuted,
      rotated streams), ``'class'`` otherwise (split streams, new classes
      arrive). Asking for the other name runs this same evaluation under the
      stream's name; asking for both runs it once.

    Parameters
    ----------
    stream : TaskStream
    requested : sequence of {'class', 'task', 'domain'}

    Returns
    -------
    scenarios : list of str
        What runs, in the order asked, without repeats.
    notes : list of str
        One sentence for each scenario renamed or skipped.

    Examples
    --------
    >>> from skcl.bench import stream_scenarios
    >>> from skcl.datasets import load_permuted_digits, load_split_digits
    >>> stream_scenarios(load_split_digits(), ["class", "task"])
    (['class', 'task'], [])
    >>> stream_scenarios(load_permuted_digits(n_experiences=3), ["class", "task", "domain"])[0]
    ['domain', 'task']
    """
    no_id = _no_id_scenario(stream)
    scenarios: list[str] = []
    notes: list[str] = []
    for scenario in requested:
        if scenario not in SCENARIOS:
            raise BenchError(f"unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
        run = scenario
        if scenario == "task" and len(set(stream.task_ids)) != len(stream):
            notes.append(f"'task' skipped on {stream.name}: its experiences share task ids.")
            continue
        if scenario != "task" and scenario != no_id:
            run = no_id
            why = ("every experience holds the same classes" if no_id == "domain"
                   else "new classes arrive")
            notes.append(f"'{scenario}' runs as '{no_id}' on {stream.name} ({why}).")
        if run not in scenarios:
            scenarios.append(run)
    return scenarios, notes


def load_settings(path: str | os.PathLike) -> dict[str, Any]:
    """Per-estimator, per-stream parameters from a JSON file or a Python file.

    A JSON file holds ``{"defaults": {...}, "estimators": {name: {stream or
    "*": {...}}}, "variants": {name: {"estimator": name, "label": str,
    "scenarios": [...] (optional)}},
    "notes": [...]}``. A Python file (such as ``benchmarks/bench_methods.py``)
    defines ``PROTOCOL`` (the defaults), ``FAMILIES`` (family -> list of
    ``(label, class name, {stream or "*": params})``; the key ``"scenarios"``,
    a tuple of scenario names, limits that row to those scenarios, e.g. a
    task-inference variant that only differs without task ids) and optionally ``NOTES``
    (family -> list of sentences for the report) and ``TUNING`` (grid name ->
    ``{parameter: [candidates]}``, the grid ``skcl bench --tune`` searches
    for that estimator; a JSON file gives it as ``"tuning"``). JSON lists
    become tuples, except in ``"tuning"``.

    A class listed more than once in ``FAMILIES`` gives variants: the entry
    whose label is the class's short name (``'EWC'`` for ``EWCClassifier``),
    else the first, sets the estimator's own parameters; each other entry is
    one more estimator of the grid, of the same class, named after its label
    (``'online EWC'`` -> ``'online-ewc'``) and part of ``'all'``.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    settings : dict
        Keys ``'defaults'``, ``'estimators'`` (keyed by the names of
        :func:`estimator_names` and of the variants), ``'variants'``,
        ``'notes'`` and ``'tuning'``.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> from skcl.bench import load_settings
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d, "settings.json")
    ...     _ = path.write_text(json.dumps(
    ...         {"estimators": {"EWCClassifier": {"split-digits": {"ewc_lambda": 1e4}}}}))
    ...     load_settings(path)["estimators"]
    {'ewc': {'split-digits': {'ewc_lambda': 10000.0}}}
    """
    path = Path(path)
    try:
        if path.suffix == ".py":
            space = runpy.run_path(str(path))
            notes = [n for family in space.get("NOTES", {}).values() for n in family]
            raw = {"defaults": space.get("PROTOCOL", {}), "notes": notes,
                   "tuning": space.get("TUNING", {}),
                   **_from_families(space.get("FAMILIES", {}))}
        else:
            raw = json.loads(path.read_text(encoding="utf-8"), object_hook=_tuples)
            raw["tuning"] = json.loads(path.read_text(encoding="utf-8")).get("tuning", {})
        tuning = {_key(k): {str(p): list(v) for p, v in grid.items()}
                  for k, grid in raw.get("tuning", {}).items()}
    except (OSError, SyntaxError, json.JSONDecodeError, ValueError, TypeError,
            AttributeError) as exc:
        raise BenchError(f"cannot read settings from {path}: {exc}") from exc
    return {
        "defaults": dict(raw.get("defaults", {})),
        "estimators": {_key(k): {s: dict(p) for s, p in v.items()}
                       for k, v in raw.get("estimators", {}).items()},
        "variants": {_key(k): {"estimator": _key(v["estimator"]), "label": str(v["label"]),
                               **({"scenarios": [str(x) for x in v["scenarios"]]}
                                  if "scenarios" in v else {})}
                     for k, v in raw.get("variants", {}).items()},
        "notes": [str(n) for n in raw.get("notes", [])],
        "tuning": tuning,
    }


def _from_families(families: Mapping[str, Sequence]) -> dict[str, dict]:
    """``estimators`` and ``variants`` settings from bench_methods.py's ``FAMILIES``."""
    entries = [(str(label), _key(cls), dict(extra))
               for family in families.values() for label, cls, extra in family]
    estimators, variants = {}, {}
    for key in dict.fromkeys(k for _, k, _ in entries):
        own = [(label, extra) for label, k, extra in entries if k == key]
        main = next((i for i, (label, _) in enumerate(own)
                     if re.sub(r"[^a-z0-9]", "", label.lower()) == key), 0)
        for i, (label, extra) in enumerate(own):
            name = key if i == main else re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
            scenarios = extra.pop("scenarios", None)
            estimators[name] = extra
            variants[name] = {"estimator": key, "label": label,
                              **({} if scenarios is None else {"scenarios": list(scenarios)})}
    return {"estimators": estimators, "variants": variants}


def _tuples(obj: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in obj.items()}


def _jsonable(value):
    """Parameters as JSON: tuples to lists, anything else unknown to its repr."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def _resolve_params(specs: list[_Spec], stream_names: list[str], settings: Mapping,
                    params: Mapping[str, Any], device: str | None) -> dict:
    """``{(estimator, stream): parameters}``; checks every name before anything runs."""
    valid = {spec.name: spec.valid_params() for spec in specs}
    scoped: dict[str, dict] = {}
    plain: dict[str, Any] = {}
    for key, value in params.items():
        name, dot, param = key.rpartition(".")
        if param == "random_state":
            raise BenchError("random_state comes from --seeds, not from --param")
        if dot:
            if _key(name) not in valid:
                raise BenchError(f"--param {key}: {name!r} is not in the grid's estimators "
                                 f"({', '.join(valid)})")
            scoped.setdefault(_key(name), {})[param] = value
        else:
            plain[param] = value

    def shared(spec: _Spec, source: Mapping) -> dict:
        if spec.translate is None:
            return {k: v for k, v in source.items() if k in valid[spec.name]}
        return {spec.translate[k]: v for k, v in source.items() if k in spec.translate}

    unused = [k for k in plain if not any(shared(spec, {k: None}) for spec in specs)]
    if unused:
        raise BenchError(f"no estimator of the grid has parameter {', '.join(sorted(unused))}")
    resolved = {}
    for spec in specs:
        own = settings.get("estimators", {}).get(spec.name, {})
        for stream in stream_names:
            merged = {**spec.defaults, **shared(spec, settings.get("defaults", {})),
                      **own.get("*", {}), **own.get(stream, {})}
            if device is not None and spec.translate is None:
                merged["device"] = device
            merged.update(shared(spec, plain))
            merged.update(scoped.get(spec.name, {}))
            merged.pop("random_state", None)
            unknown = sorted(set(merged) - set(valid[spec.name]))
            if unknown:
                raise BenchError(f"{spec.cls} has no parameter {', '.join(unknown)}; valid: "
                                 f"{', '.join(valid[spec.name])}")
            resolved[spec.name, stream] = merged
    return resolved


def _stream_digest(stream: TaskStream) -> str:
    digest = hashlib.sha1(stream.name.encode())
    for exp in stream:
        digest.update(repr((exp.task_id, exp.classes.tolist())).encode())
        for array in (exp.X_train, exp.y_train, exp.X_test, exp.y_test):
            digest.update(np.ascontiguousarray(array).tobytes() if array.dtype.kind != "O"
                          else repr(array.tolist()).encode())
    return digest.hexdigest()


def _tuning_rows(specs: list[_Spec], grids: Mapping[str, Mapping], tune: str,
                 n_tasks: int) -> dict[str, tuple[_Spec, _Spec, dict]]:
    """``{row name: (estimator's spec, row's spec, tuning)}``: the tuned and the oracle
    row of every estimator of the grid that has a tuning grid."""
    from skcl.model_selection import ORACLE

    known = set(_specs()) | {s.name for s in specs}
    unknown = sorted(set(grids) - known)
    if unknown and not all(_key(n) in known for n in unknown):
        raise BenchError(f"settings: tuning grid for unknown estimator {unknown[0]!r}")
    rows = {}
    for spec in specs:
        grid = grids.get(spec.name)
        if not grid:
            continue
        for protocol in (tune, ORACLE):
            if protocol == ORACLE:
                label = f"{spec.label}, ORACLE: tuned on test data (reference only)"
            else:
                label = f"{spec.label}, tuned ({protocol}" + (
                    f", k={n_tasks})" if protocol == "first-tasks" else ")")
            name = f"{spec.name}@{protocol}"
            rows[name] = (spec, replace(spec, name=name, label=label),
                          {"protocol": protocol, "n_tasks": n_tasks, "grid": dict(grid)})
    return rows


def _check_grid(spec: _Spec, grid: Mapping[str, Sequence]) -> None:
    """Every parameter of a tuning grid is the estimator's, with at least one candidate."""
    unknown = sorted(set(grid) - set(spec.valid_params()))
    if unknown:
        raise BenchError(f"settings: the tuning grid of {spec.name} names {', '.join(unknown)}, "
                         f"which {spec.cls} does not have")
    empty = [p for p, values in grid.items() if not list(values)]
    if empty:
        raise BenchError(f"settings: the tuning grid of {spec.name} has no candidate for "
                         f"{empty[0]}")


def _ordered(specs: list[_Spec], tuning: Mapping[str, tuple]) -> list[_Spec]:
    """The grid's rows: each estimator, then its tuned and oracle rows."""
    rows = []
    for spec in specs:
        rows.append(spec)
        rows += [row for base, row, _ in tuning.values() if base.name == spec.name]
    return rows

"""Sphinx configuration of the skcl documentation (``make docs`` builds it).

The API reference (``api.rst``) is written here at every build from the
public names of each module in ``API_MODULES`` (their ``__all__`` when they
have one, otherwise the classes and functions they define), so a new
estimator added to ``skcl.__all__`` appears without editing the docs.
The gallery is ``../examples``, executed by sphinx-gallery.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The Dask example starts an in-process cluster; keep its INFO lines out of the build log.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
sys.path.insert(0, str(HERE))

import skcl  # noqa: E402

project = "skcl"
author = "the skcl developers"
copyright = "the skcl developers"  # noqa: A001
release = skcl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.pickle",
                    "**/.gitignore"]
templates_path = ["_templates"]

# ---------------------------------------------------------------- HTML
html_theme = "furo"
html_title = f"skcl {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# ---------------------------------------------------------------- autodoc / numpydoc
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_member_order = "groupwise"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
nitpicky = False
# A numpydoc "References" entry that the text does not cite as ``[1]_`` (the
# skcl.metrics module docstring) is an unreferenced citation; it renders
# correctly, so that one warning category is not an error.
suppress_warnings = ["ref.citation"]
add_function_parentheses = False

# ---------------------------------------------------------------- MyST (the .md pages)
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# ---------------------------------------------------------------- intersphinx
# Off by default: the build must work without a network. SKCL_DOCS_INTERSPHINX=1
# links to the Python, NumPy, scikit-learn and PyTorch docs.
intersphinx_mapping = {}
if os.environ.get("SKCL_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
    }

# ---------------------------------------------------------------- sphinx-gallery
sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "write_computation_times": True,
    "doc_module": ("skcl",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"skcl": None},
}

# ---------------------------------------------------------------- the API reference
API_MODULES = [
    ("skcl", "Estimators",
     "Every continual-learning method is a subclass of ``ContinualClassifier``."),
    ("skcl.datasets", "Streams", "Task streams built from arrays, and the protocol's streams."),
    ("skcl.metrics", "Metrics", "Metrics on the accuracy matrix ``R``."),
    ("skcl.evaluation", "Evaluation",
     "Running an estimator over a stream and showing what it measured."),
    ("skcl.memory", "Memories", "What replay-style methods keep between tasks."),
    ("skcl.exemplars", "Exemplars", "iCaRL's herding-chosen exemplar sets."),
    ("skcl.nn", "Networks", "Trunks, growing output layers and per-task heads."),
    ("skcl.kernels", "Compiled kernels", "The one door to the C++ and CUDA code."),
    ("skcl.pipeline", "Pipelines", "scikit-learn pipelines with ``partial_fit``."),
    ("skcl.scoring", "Scorers", "scikit-learn scorers that pass ``task_id`` on."),
    ("skcl.model_selection", "Hyperparameter search",
     "Searches that score candidates on streams without their test data."),
    ("skcl.tabular", "Data files", "Streams from CSV, Parquet and ``.npz`` files."),
    ("skcl.bench", "Benchmark grids", "Estimators x streams x scenarios x seeds."),
    ("skcl.registry", "Estimator registry", "Every public estimator and its names."),
    ("skcl.base", "Training-loop types", "Types the training loop and the memories share."),
    # Listed ahead of time: a module here that does not exist yet is skipped.
    ("skcl.components", "Components", "Mechanics estimators hold: penalties, snapshots."),
]


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__
        ]
    return sorted(names, key=lambda n: (not inspect.isclass(getattr(module, n)), n.lower()))


#: id of each documented class and function -> the name it is documented under.
DOCUMENTED: dict[int, str] = {}


def write_api_reference(path: Path = HERE / "api.rst") -> None:
    """Write the autosummary page of every public name, each object documented once."""
    lines = [
        ".. This file is written by docs/conf.py at every build; do not edit it.",
        "",
        ".. _api:",
        "",
        "API reference",
        "=============",
        "",
        "Every public name of skcl, by module. Names re-exported by a module listed",
        "earlier are documented there only.",
        "",
    ]
    seen: set[int] = set()
    DOCUMENTED.clear()
    for modname, title, blurb in API_MODULES:
        if importlib.util.find_spec(modname) is None:
            continue
        module = importlib.import_module(modname)
        names = []
        for name in _public_names(module):
            obj = getattr(module, name)
            key = id(obj)
            if (inspect.isclass(obj) or callable(obj)) and key in seen:
                continue
            seen.add(key)
            names.append(name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                DOCUMENTED[key] = f"{modname}.{name}"
        if not names:
            continue
        heading = f"{title}: :mod:`{modname}`"
        lines += [heading, "-" * len(heading), "", f".. automodule:: {modname}",
                  "   :no-members:", "", blurb, "",
                  f".. currentmodule:: {modname}", "", ".. autosummary::",
                  "   :toctree: generated/", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in names]
        lines.append("")
    text = "\n".join(lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


write_api_reference()


def _defined_in_skcl(obj) -> bool:
    """Whether a class member's code lives in skcl (not in scikit-learn or PyTorch)."""
    for candidate in (obj, getattr(obj, "fget", None), getattr(obj, "__func__", None)):
        module = getattr(candidate, "__module__", None)
        if isinstance(module, str):
            return module == "skcl" or module.startswith("skcl.")
    return True


def skip_foreign_members(app, what, name, obj, skip, options):
    """Document a class's own methods and those inherited from skcl classes only.

    Members that skcl classes inherit from scikit-learn (``get_params``,
    ``set_*_request``, ``Pipeline`` methods) or PyTorch (``nn.Module``) are
    documented by those projects; their docstrings point at labels of those
    projects' sites, which do not exist here.
    """
    if what == "class" and not _defined_in_skcl(obj):
        return True
    return None


def join_continued_lines(app, what, name, obj, options, lines):
    """Join a docstring line ending in a backslash with the next one.

    Several estimators list the shared parameters on one numpydoc line split
    with ``\\`` inside a raw docstring, where the backslash stays in the text.
    Python would join such lines in a normal string; this does the same, so
    the parameter list renders as its author wrote it.
    """
    i = 0
    while i < len(lines) - 1:
        if lines[i].endswith("\\") and not lines[i].endswith("\\\\"):
            lines[i] = lines[i][:-1] + lines.pop(i + 1).lstrip()
        else:
            i += 1


def _resolve(path: str):
    """The object a dotted path names (a module, then attributes), or None."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def link_reexported_names(app, env, node, contnode):
    """Resolve a reference to a name by the path it is documented under.

    Docstrings cite classes where they are defined (``skcl.base.ContinualClassifier``,
    ``skcl.results.StreamResult``); the reference documents each object once,
    under its public path (``skcl.ContinualClassifier``,
    ``skcl.evaluation.StreamResult``). A reference whose target is not found is
    retried with the public path of the object, or of the class owning the
    attribute, it names.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("skcl."):
        return None
    parts = target.split(".")
    for i in range(len(parts), 1, -1):
        obj = _resolve(".".join(parts[:i]))
        public = DOCUMENTED.get(id(obj)) if obj is not None else None
        if public is not None:
            new_target = ".".join([public, *parts[i:]])
            if new_target == target:
                return None
            domain = env.get_domain("py")
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       new_target, node, contnode)
    return None


def setup(app):
    app.connect("missing-reference", link_reexported_names)
    app.connect("autodoc-skip-member", skip_foreign_members)
    # Before numpydoc (priority 500) parses the sections.
    app.connect("autodoc-process-docstring", join_continued_lines, priority=100)

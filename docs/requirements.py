"""Print the ``docs`` extra of pyproject.toml, one requirement a line.

``make docs`` installs these into the virtual environment without
reinstalling skcl itself (``pip install -e '.[docs]'`` would rebuild the
compiled extension).
"""

from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
with open(pyproject, "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
print("\n".join(extras["docs"]))

"""Build the API reference with pdoc: ``python docs/build.py OUT`` (what ``make docs`` runs).

The package page, where index.html leads, opens with the README, so the Tour is the first thing a reader meets;
a list of every module follows. Docstrings are Google style (Args/Returns/Raises). A warning from pdoc (a
docstring it cannot parse, a module it cannot import) fails the build, so no page is silently dropped.
"""
import importlib
import os
import pathlib
import pkgutil
import sys
import warnings

import pdoc
import pdoc.extract
import pdoc.render

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _summary(module):
    """The first paragraph of a module's docstring, on one line."""
    return " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())


def build(output):
    """Write the HTML reference of tfprune into `output`.

    Args:
      output: the folder to write to (created if missing).

    Raises:
      Warning: any warning pdoc gives, raised as an error.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))  # this checkout's tfprune, whatever is installed
    import tfprune
    modules = [f"tfprune.{module.name}" for module in pkgutil.iter_modules(tfprune.__path__)
               if not module.name.startswith("_")]
    summaries = [f"- `{name}`: {_summary(importlib.import_module(name))}" for name in modules]
    # Docs only: the first page shows the README, the package's own module map and every module.
    tfprune.__doc__ = "\n\n".join([(ROOT / "README.md").read_text(encoding="utf-8"), "## The package",
                                   tfprune.__doc__, "## Modules", "\n".join(summaries)])
    pdoc.render.configure(docformat="google", footer_text="tfprune")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # pdoc walks only the submodules the package's __all__ names; the others are listed explicitly.
        walked = set(pdoc.extract.walk_specs(["tfprune"]))
        pdoc.pdoc("tfprune", *[name for name in modules if name not in walked],
                  output_directory=pathlib.Path(output))


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "docs" / "html"))

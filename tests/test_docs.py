"""The API reference: `make docs` builds it with pdoc, warnings failing the build, the README first; every public
name documents its arguments, what it returns and what it raises."""
import ast
import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap
import types

import pytest

import tfprune

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_reference_builds_with_the_readme_first(tmp_path):
    pytest.importorskip("pdoc")
    done = subprocess.run([sys.executable, os.path.join("docs", "build.py"), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]  # build.py turns every pdoc warning into an error
    assert 'url=./tfprune.html' in (tmp_path / "index.html").read_text()
    front = (tmp_path / "tfprune.html").read_text()
    assert front.index('id="tour"') < front.index('id="modules"')
    for module in ("callbacks", "study", "export", "lottery", "pai", "cli"):
        assert f'href="tfprune/{module}.html"' in front and (tmp_path / "tfprune" / f"{module}.html").is_file()


def _public_objects():
    """Functions and classes tfprune's __all__ names, directly or as members of the modules it names."""
    for name in tfprune.__all__:
        value = getattr(tfprune, name)
        if isinstance(value, types.ModuleType):
            members = getattr(value, "__all__", None) or [n for n in vars(value) if not n.startswith("_")]
            yield from (getattr(value, member) for member in members)
        else:
            yield value


def _documentable():
    seen = {}
    for obj in _public_objects():
        if (inspect.isfunction(obj) or inspect.isclass(obj) and not issubclass(obj, BaseException)) \
                and obj.__module__.startswith("tfprune"):
            seen[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [pytest.param(obj, id=name) for name, obj in sorted(seen.items())]


def _body(function):
    """The function's own statements (nested functions and classes left out)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    stack, nodes = list(tree.body), []
    while stack:
        node = stack.pop()
        nodes.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def _raises(nodes):
    """A raise statement, or a call of a check_* validator."""
    def called(node):
        function = node.func
        return getattr(function, "id", None) or getattr(function, "attr", "")
    return any(isinstance(node, ast.Raise) or isinstance(node, ast.Call) and called(node).lstrip("_").startswith(
        "check") for node in nodes)


@pytest.mark.parametrize("obj", _documentable())
def test_public_names_document_arguments_returns_and_raises(obj):
    doc = inspect.getdoc(obj) or ""
    function = obj.__dict__.get("__init__") if inspect.isclass(obj) else obj
    needed = []
    if function is not None:
        parameters = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
        # A dataclass's __init__ is generated; its checks, if any, are in __post_init__.
        checks = getattr(obj, "__post_init__", None) if dataclasses.is_dataclass(obj) else function
        nodes = _body(checks) if checks is not None else []
        needed += ["Args:"] * bool(parameters) + ["Raises:"] * _raises(nodes)
        if not inspect.isclass(obj) and any(isinstance(node, ast.Return) and node.value is not None
                                            for node in nodes):
            needed.append("Returns:")
    assert doc and not [section for section in needed if section not in doc], needed

"""The README runs as written: each Tour snippet, exactly as printed, after the shared preamble, and each line of
its command-line block as one command."""
import os
import re
import shlex
import subprocess
import sys

import pytest

from tfprune import models
from tfprune_cli import build_parser, main

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")

# Each snippet gets a fresh namespace holding only the preamble's names, so one that leans on an earlier one fails.
RUN_SNIPPETS = """
import re, sys
with open(sys.argv[1]) as handle:
    preamble, *snippets = re.findall(r"```python\\n(.*?)```", handle.read(), re.S)
for snippet in snippets:
    print(f"--- running the snippet that starts: {snippet.splitlines()[0]}", file=sys.stderr, flush=True)
    namespace = {"__name__": "__main__"}
    exec(preamble, namespace)
    exec(snippet, namespace)
"""


def _readme():
    with open(README) as handle:
        return handle.read()


@pytest.mark.slow
def test_tour_snippets_run_as_printed(tmp_path):
    assert len(re.findall(r"```python\n", _readme())) >= 8  # the preamble and seven snippets
    result = subprocess.run([sys.executable, "-c", RUN_SNIPPETS, os.path.abspath(README)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model.tflite").exists()


def _command_lines():
    blocks = re.findall(r"```sh\n(.*?)```", _readme(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("tfprune ")]


def test_command_lines_run_as_printed(tmp_path, monkeypatch, capsys):
    lines = _command_lines()
    assert {line.split()[1] for line in lines} == {"study", "report", "export", "bench", "prune", "sensitivity",
                                                   "budget"}
    monkeypatch.chdir(tmp_path)
    models.lenet5().save("model.keras")
    for line in lines:
        command = line.split("#")[0]
        assert not set("|;&") & set(command), f"not one command: {line}"
        argv = shlex.split(command)[1:]
        if argv[0] == "study":  # a full study trains for many minutes: its line is parsed, not run
            assert build_parser().parse_args(argv).preset == "seeds-mnist"
            continue
        assert main(argv) == 0, f"{line}\n{capsys.readouterr().err}"
    assert os.path.isfile("out/model.tflite") and os.path.isfile("small.keras")

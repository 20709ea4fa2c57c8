"""The README's tour runs as written (with training budgets cut to one epoch/round so it stays quick)."""
import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
SHORTER = [("epochs=10", "epochs=1"), ("epochs=5", "epochs=1"), ('{"epochs": 4', '{"epochs": 1'),
           ("rounds=5", "rounds=1"), ("rewind_step=60", "rewind_step=2")]


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    with open(README) as handle:
        code = "\n".join(re.findall(r"```python\n(.*?)```", handle.read(), re.S))
    for long, short in SHORTER:
        code = code.replace(long, short)
    code = code.replace("(x_train, y_train), (x_test, y_test) = tfprune.data.mnist_5k()",
                        "(x_train, y_train), (x_test, y_test) = tfprune.data.mnist_5k()\n"
                        "x_train, y_train = x_train[:1000], y_train[:1000]")
    script = tmp_path / "readme_tour.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model.tflite").exists()

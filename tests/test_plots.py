"""Figures: every plotter writes a complete image and leaves the caller's matplotlib backend alone.
(A study's three figures are drawn in tests/test_study.py from real rows.)"""
import matplotlib
import pytest

from tfprune import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_imp_and_compare_write_images_without_touching_the_backend(tmp_path):
    backend = matplotlib.get_backend()
    rounds = [{"round": r, "remaining": 0.8 ** r, "accuracy": 0.9 - 0.01 * r} for r in range(4)]
    variants = [{"variant": "dense", "zipped_bytes": 4096, "macs": 2e6, "tf_ms": 1.5, "litert_ms": 0.2,
                 "accuracy": 0.97},
                {"variant": "shrunk", "zipped_bytes": 1024, "macs": 5e5, "tf_ms": 0.9, "litert_ms": None,
                 "accuracy": 0.95}]
    for path in (plots.imp({"weights": rounds, "lr": rounds[:2]}, tmp_path / "imp.png"),
                 plots.compare(variants, tmp_path / "compare.png")):
        with open(path, "rb") as file:
            assert file.read(8) == PNG
    assert matplotlib.get_backend() == backend
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.png", "imp.png"]  # no temporary files left


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="plots.imp: results for 'lr' must be imp"):
        plots.imp({"lr": [{"round": 0}]}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="compare: `rows` is empty"):
        plots.compare([], tmp_path / "bad.png")

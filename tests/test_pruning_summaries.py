"""PruningSummaries exists to write TensorBoard summaries, so it refuses to be built without a place to write."""
import pytest

import tfprune


def test_log_dir_is_required_and_named():
    with pytest.raises(TypeError, match="log_dir"):
        tfprune.PruningSummaries()
    for empty in (None, ""):
        with pytest.raises(ValueError, match=r"`log_dir` must name the folder.*log_dir='logs/pruning'"):
            tfprune.PruningSummaries(log_dir=empty)


"""Per-layer pruning report: params, non-zeros, sparsity and live units, whatever method pruned."""
from tfprune._keras import check_model
from tfprune.metrics import format_table, layer_table
from tfprune.validation import check_finite

REPORT_COLUMNS = ("name", "class", "params", "nonzero", "sparsity", "units", "live_units", "macs")


def report(model, print_fn=print):
    """Print the per-layer table of params, non-zeros, sparsity, live units and MACs, plus a total line.

    Works on wrapped (masked) and stripped models alike: masked weights count as zeros.

    Args:
      model: a tf_keras model.
      print_fn: called with the table's text; None prints nothing.

    Returns:
      the rows, one dict per layer with parameters (columns `REPORT_COLUMNS`).

    Raises:
      ValueError: weights hold NaN or inf.
      TypeError: `model` is not a tf_keras model.
    """
    check_model(model)
    check_finite(model, "report")
    rows = [row for row in layer_table(model) if row["params"]]
    params = sum(row["params"] for row in rows)
    nonzero = sum(row["nonzero"] for row in rows)
    total = {"name": "TOTAL", "class": "", "params": params, "nonzero": nonzero,
             "sparsity": 1.0 - nonzero / params if params else 0.0, "units": "", "live_units": "",
             "macs": sum(row["macs"] or 0 for row in rows)}
    if print_fn is not None:
        print_fn(format_table(rows + [total], columns=REPORT_COLUMNS))
    return rows

"""Per-layer pruning report: params, non-zeros, sparsity and live units, whatever method pruned."""
from tfprune._keras import check_model
from tfprune.metrics import format_table, layer_table
from tfprune.validation import check_finite

REPORT_COLUMNS = ("name", "class", "params", "nonzero", "sparsity", "units", "live_units", "macs")


def report(model, print_fn=print):
    """Print (and return) the per-layer table plus a total line; works on wrapped or stripped models."""
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

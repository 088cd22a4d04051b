"""The CLI's exit codes (also `taas --help`'s epilog)."""

SUCCEEDED, FAILED, INVALID, CANCELLED, PRUNED, REFUSED, NO_CONNECTION = 0, 1, 2, 3, 4, 5, 6
DETACHED = 130

BY_STATUS = {"succeeded": SUCCEEDED, "failed": FAILED, "cancelled": CANCELLED,
             "pruned": PRUNED, "queued": SUCCEEDED, "running": SUCCEEDED}

"""PASS/FAIL checks for the e2e scenarios (the testbed's self-test and the mesh scenarios):
each check runs at once, is recorded, and a failure does not stop the others. Python 3 stdlib."""

import time

results = []  # (check name, passed)


def check(name):
    """Decorator: runs the check at once and records PASS/FAIL with its time and message."""
    def deco(fn):
        t0 = time.monotonic()
        try:
            msg = fn()
            results.append((name, True))
            print("PASS %-58s %5.2fs %s" % (name, time.monotonic() - t0, msg or ""), flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            results.append((name, False))
            print("FAIL %-58s %5.2fs %s: %s" % (name, time.monotonic() - t0,
                                                type(e).__name__, e), flush=True)
        return fn
    return deco


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)

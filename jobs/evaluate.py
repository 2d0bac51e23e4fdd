"""``dopa eval`` (moving here from control/evaluate.py)."""
from control.evaluate import run  # noqa: F401

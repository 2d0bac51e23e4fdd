"""``dopa demos`` (moving here from sim/demos.py)."""
from sim.demos import run  # noqa: F401

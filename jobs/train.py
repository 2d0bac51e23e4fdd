"""``dopa train`` (moving here from control/train.py)."""
from control.train import compose_config, run  # noqa: F401

"""``dopa reward-train``, ``reward-eval``, ``reward-adapt`` (moving here from reward_models/)."""
from reward_models.adapt import run as run_adapt  # noqa: F401
from reward_models.evaluate import run as run_eval  # noqa: F401
from reward_models.train import run as run_train  # noqa: F401

"""Test-wide settings, in one place: headless rendering, offline model loading, localhost DDS."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# ROS 2: discovery stays on this machine; a domain id per test run so parallel runs do not mix.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

import torch  # noqa: E402

torch.set_num_threads(1)

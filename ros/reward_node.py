"""The reward node: the GRM progress tracker on live camera topics.

It subscribes to ``sensor_msgs/Image`` for every view the potential needs (sensor-data QoS, decoded
without cv_bridge and resized to the model's image size), and at ``rate_hz`` feeds the latest
frames, when all are fresh by their header stamps (``max_age``) and at least one is new, to the
potential. It publishes:

- ``~/progress``: ``std_msgs/Float32``, progress Phi in [0, 1] (the shaping potential);
- ``~/complete``: ``std_msgs/Bool``, the completion ("gold") signal, Phi >= 0.95 in the GRM.

``~/reset`` (``std_srvs/Trigger``) starts a new episode: the tracker's history (incremental
fusion) is dropped and restarted on the next frames. Stale or missing frames publish nothing (the
reason is logged once per change), so a consumer never mistakes old progress for new.

The potential follows ``reward_models.potential.Potential`` (``views``, ``reset(env_ids, obs)``,
``__call__(obs) -> (phi [B], complete [B])``) with B = 1, e.g.
``reward_models.tracker.GRMPotential``. This module imports rclpy at the top; the deploy job
imports it only when a reward node is asked for.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32
from std_srvs.srv import Trigger

from ros.messages import MessageError, image_to_rgb, stamp_to_sec


class RewardNode(Node):
    """The reward node.

    Args:
        potential: a Potential with image views (``potential.views`` non-empty).
        image_topics: ``{view: topic}``; must cover every view of the potential.
        rate_hz: query rate (Hz), > 0.
        max_age: largest frame age (s, by header stamp) used for a query.
        image_size: pixels per side fed to the potential (default: ``potential.backend.image_size``
            or ``potential.model.config.image_size`` when present, else the frames' own size).
        context: an ``rclpy.Context`` (None: the global one).
        node_name, namespace: the ROS 2 node name and namespace.
    Attributes: ``history`` (list of ``(frame stamp s, query time s, phi, complete)``; the frame
    stamp is the newest of the frames used) and ``rejected`` (malformed images).
    Raises:
        ValueError: a state-only potential, a view without topic (views named), bad rate or age.
    """

    def __init__(self, potential, image_topics: dict[str, str], rate_hz: float = 2.0, max_age: float = 1.0,
                 image_size: int | None = None, context=None, node_name: str = "dopa_reward", namespace: str = ""):
        views = tuple(getattr(potential, "views", ()) or ())
        if not views:
            raise ValueError("the reward node needs an image potential (potential.views is empty)")
        missing = [v for v in views if v not in image_topics]
        if missing:
            raise ValueError(f"no camera topic for view(s) {missing}; configured: {sorted(image_topics)}")
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be > 0, got {rate_hz!r}")
        if not (math.isfinite(max_age) and max_age > 0):
            raise ValueError(f"max_age must be > 0 s, got {max_age!r}")
        if image_size is None:  # the size the potential's model reads (its backend's, else its config's)
            image_size = getattr(getattr(potential, "backend", None), "image_size", None)
        if image_size is None:
            image_size = getattr(getattr(getattr(potential, "model", None), "config", None), "image_size", None)
        super().__init__(node_name, namespace=namespace, context=context)
        self.potential = potential
        self.views, self.max_age, self.image_size = views, max_age, image_size
        self.frames: dict[str, tuple[float, np.ndarray]] = {}
        self.used: dict[str, float] = {}
        self.started = False
        self.history: list[tuple[float, float, float, bool]] = []
        self.rejected = 0
        self.last_reject = ""
        self._last_reason = None
        self.progress_pub = self.create_publisher(Float32, "~/progress", 10)
        self.complete_pub = self.create_publisher(Bool, "~/complete", 10)
        for v in views:
            self.create_subscription(Image, image_topics[v], (lambda view: lambda m: self._on_image(view, m))(v),
                                     qos_profile_sensor_data)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(1.0 / rate_hz, self._tick)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, view: str, msg) -> None:
        try:
            stamp = stamp_to_sec(msg.header.stamp)
            if stamp <= 0:
                raise MessageError("header stamp is zero")
            self.frames[view] = (stamp, image_to_rgb(msg, self.image_size))
        except MessageError as exc:
            self.rejected += 1
            self.last_reject = f"image {view!r}: {exc}"
            self.get_logger().warning(f"rejected {self.last_reject}", throttle_duration_sec=1.0)

    def _on_reset(self, req, resp):
        self.started = False
        self.used = {}
        resp.success, resp.message = True, "progress tracker restarts on the next frames"
        return resp

    def _skip(self, reason: str) -> None:
        if reason != self._last_reason:
            self._last_reason = reason
            self.get_logger().info(f"no progress published: {reason}")

    def _tick(self) -> None:
        now, views = self.now(), self.views
        for v in views:
            if v not in self.frames:
                return self._skip(f"no frame yet from view {v!r}")
            age = now - self.frames[v][0]
            if age > self.max_age:
                return self._skip(f"view {v!r} is {age:.2f} s old (bound {self.max_age} s)")
        if all(self.used.get(v) == self.frames[v][0] for v in views):
            return  # nothing new since the last query
        self._last_reason = None
        obs = {"state": torch.zeros(1, 0),
               "images": {v: torch.from_numpy(self.frames[v][1])[None] for v in views}}
        try:
            if not self.started:
                self.potential.reset(torch.zeros(1, dtype=torch.int64), obs)
                self.started = True
            phi, complete = self.potential(obs)
            p = float(torch.as_tensor(phi).reshape(-1)[0])
            c = bool(torch.as_tensor(complete).reshape(-1)[0])
            if not math.isfinite(p):
                raise FloatingPointError(f"potential returned {p}")
        except (ValueError, RuntimeError, FloatingPointError) as exc:
            self.get_logger().error(f"progress query failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=1.0)
            return
        self.used = {v: self.frames[v][0] for v in views}
        stamp = max(self.used.values())
        self.history.append((stamp, now, p, c))
        self.progress_pub.publish(Float32(data=p))
        self.complete_pub.publish(Bool(data=c))

"""ROS 2 (rclpy) nodes: the policy node, the reward node and a MuJoCo-backed stand-in robot."""

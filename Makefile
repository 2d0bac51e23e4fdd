# The two quick-start commands (`make train`, `make test`) create .venv themselves when it is
# missing or older than pyproject.toml / constraints.txt.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTHON  ?= python3
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup train test lint bench help
help:
	@echo "make train [ARGS='key=value ...']   set up .venv if needed, then run 'dopa train'"
	@echo "make test  [ARGS='pytest args']     set up .venv if needed, then run the tests"
	@echo "make setup                          only create/refresh .venv"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]" --config-settings editable_mode=compat
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/dopa train $(ARGS)

# The real-DDS node tests run in their own process: threads left by other tests' ROS contexts
# could otherwise starve their 20 Hz loop.
ROS_TESTS := tests/test_ros_nodes.py tests/test_ros_reliability.py
test: $(STAMP)
	$(PY) -m pytest $(ARGS) $(addprefix --ignore=,$(ROS_TESTS)) || [ $$? -eq 5 ]
	$(PY) -m pytest $(ARGS) $(ROS_TESTS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check .

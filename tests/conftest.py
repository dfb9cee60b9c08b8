"""Shared pytest setup: quiet TensorFlow logs and two logical CPU devices."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

"""Hydra's schemas for conf/train.yaml and conf/build.yaml, registered for every test.

The apps register them when they import their config modules; a test that composes a config
directly must not depend on another test having imported them first.
"""

import data.config
import distill.config

data.config.register_build_configs()
distill.config.register_configs()

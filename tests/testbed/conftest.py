# The testbed's fixtures.  Once tests/conftest.py has
# `pytest_plugins = ["shipline.testbed.fixtures"]`, this import can go.
from shipline.testbed.fixtures import *  # noqa: F403

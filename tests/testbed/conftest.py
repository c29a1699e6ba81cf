# Until tests/conftest.py loads it for the whole suite.
pytest_plugins = ["shipline.testbed.fixtures"]

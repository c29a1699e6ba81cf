"""The `testbed` fixture itself, in a pytest session of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shipline.testbed.fixtures import Testbed

pytestmark = pytest.mark.testbed

CONFTEST = """
from shipline.exceptions import ShiplineError
from shipline.testbed import running

pytest_plugins = ["shipline.testbed.fixtures"]
real_up = running.up
tries = []


def up(*args, **kwargs):
    tries.append(1)
    if len(tries) == 1:
        raise ShiplineError("kube-apiserver ended within a second (made to fail, once)")
    return real_up(*args, **kwargs)


running.up = up
"""


def test_a_testbed_that_comes_up_on_a_second_try_is_said_at_the_end_and_fails_no_test(testbed: Testbed, tmp_path: Path) -> None:
    """The session's tests run (not errored: the project's pytest turns warnings into errors),
    and the first failure is said in the session's summary."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text("def test_it(testbed):\n    assert testbed.state.ports['registry']\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
    assert "the testbed came up on a second try; the first failed: kube-apiserver ended within a second" in done.stdout

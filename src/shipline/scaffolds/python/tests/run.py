"""Run the tests with unittest and write junit.xml, so the pipeline shows passed/failed counts and names."""

from __future__ import annotations

import sys
import time
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path


class JUnitResult(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.cases: list[tuple[unittest.TestCase, str, float]] = []
        self._start = 0.0

    def startTest(self, test):  # type: ignore[no-untyped-def]  # noqa: N802
        self._start = time.monotonic()
        super().startTest(test)

    def _done(self, test, outcome):  # type: ignore[no-untyped-def]
        self.cases.append((test, outcome, time.monotonic() - self._start))

    def addSuccess(self, test):  # type: ignore[no-untyped-def]  # noqa: N802
        super().addSuccess(test)
        self._done(test, "passed")

    def addFailure(self, test, err):  # type: ignore[no-untyped-def]  # noqa: N802
        super().addFailure(test, err)
        self._done(test, "failure")

    def addError(self, test, err):  # type: ignore[no-untyped-def]  # noqa: N802
        super().addError(test, err)
        self._done(test, "error")

    def addSkip(self, test, reason):  # type: ignore[no-untyped-def]  # noqa: N802
        super().addSkip(test, reason)
        self._done(test, "skipped")


def main() -> int:
    root = Path(__file__).resolve().parent
    suite = unittest.defaultTestLoader.discover(str(root), pattern="test_*.py")
    result = unittest.TextTestRunner(resultclass=JUnitResult, verbosity=2).run(suite)
    assert isinstance(result, JUnitResult)
    xml = ET.Element("testsuite", name="__NAME__", tests=str(len(result.cases)))
    for test, outcome, seconds in result.cases:
        classname, _, name = test.id().rpartition(".")
        case = ET.SubElement(xml, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")
        if outcome != "passed":
            ET.SubElement(case, outcome)
    ET.ElementTree(xml).write(root.parent / "junit.xml", encoding="utf-8", xml_declaration=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())

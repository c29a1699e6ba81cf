import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from __MODULE__.app import greeting  # noqa: E402


class GreetingTest(unittest.TestCase):
    def test_default(self) -> None:
        self.assertEqual(greeting(), "hello, world")

    def test_name(self) -> None:
        self.assertEqual(greeting("ship"), "hello, ship")


if __name__ == "__main__":
    unittest.main()

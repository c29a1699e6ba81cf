"""Hostile definitions fail fast, with FILE:LINE:COL (issue 12, item 7): size, nesting, alias expansion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shipline.engine.loading import MAX_DEFINITION_BYTES, load_pipeline
from shipline.exceptions import DefinitionError


def problems(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_pipeline(path)
    return [str(p) for p in caught.value.problems]


def test_billion_laughs_is_refused_at_the_alias_that_expands_too_far(write: Callable[..., Path]) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write("\n".join(lines) + "\nname: x\ntasks:\n  - name: t\n    steps: [{run: echo}]\n    env: {X: *a8}\n")
    found = problems(path)
    assert len(found) == 1 and "once aliases are expanded" in found[0], found
    assert found[0].startswith(f"{path}:5:"), found  # a4, the first anchor that stands for more than the limit


def test_deep_nesting_is_refused_where_it_gets_too_deep(write: Callable[..., Path]) -> None:
    path = write("name: x\ntasks: " + "[" * 5000 + "]" * 5000 + "\n")
    found = problems(path)
    assert found == [f"{path}:2:71: nested more than 64 levels deep"], found


def test_a_file_too_large_is_not_read(write: Callable[..., Path]) -> None:
    path = write("name: x\ntasks:\n" + "# padding\n" * (MAX_DEFINITION_BYTES // 10 + 1))
    found = problems(path)
    assert len(found) == 1 and f"a definition may be at most {MAX_DEFINITION_BYTES}" in found[0], found


def test_a_reused_task_file_is_bounded_too(write: Callable[..., Path]) -> None:
    write("inputs: {}\nsteps: " + "[" * 100 + "]" * 100 + "\n", "task.yaml")
    path = write("name: x\ntasks:\n  - name: t\n    uses: ./task.yaml\n")
    found = problems(path)
    assert any("task.yaml:2:" in p and "nested more than 64" in p for p in found), found


def test_anchors_within_the_limits_still_work(write: Callable[..., Path]) -> None:
    path = write("""
        name: x
        env: &common {A: "1", B: "2"}
        tasks:
          - name: t
            env: *common
            steps: [{run: echo}]
    """)
    assert load_pipeline(path).tasks[0].env == {"A": "1", "B": "2"}


def test_deep_block_nesting_is_refused_too(write: Callable[..., Path]) -> None:
    deep = "".join(f"{'  ' * i}k:\n" for i in range(1, 80))
    path = write("name: x\nenv:\n" + deep + "tasks: []\n")
    found = problems(path)
    assert found == [f"{path}:66:{2 * 64 + 1}: nested more than 64 levels deep"], found

"""The task graph: who waits for whom, cycles, and who comes before whom.

A task without `needs:` waits for the task listed before it in its list
(`tasks:` or `finally:`); `needs: []` starts at once.  Finally tasks start
after every main task has ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    name: str
    needs: list[str] | None  # as written; None means "the one before"


def dependencies(nodes: Sequence[Node]) -> dict[str, list[str]]:
    """Each task's effective predecessors within its own list."""
    deps: dict[str, list[str]] = {}
    for i, node in enumerate(nodes):
        if node.needs is not None:
            deps[node.name] = list(node.needs)
        else:
            deps[node.name] = [nodes[i - 1].name] if i > 0 else []
    return deps


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a path `[a, b, c, a]`, or None.  Unknown names are ignored."""
    white, grey, black = 0, 1, 2
    colour = {name: white for name in deps}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        colour[name] = grey
        stack.append(name)
        for dep in deps[name]:
            if dep not in colour:
                continue
            if colour[dep] == grey:
                return stack[stack.index(dep) :] + [dep]
            if colour[dep] == white and (cycle := visit(dep)):
                return cycle
        stack.pop()
        colour[name] = black
        return None

    for name in deps:
        if colour[name] == white and (cycle := visit(name)):
            return cycle
    return None


def ancestors(deps: Mapping[str, Sequence[str]], name: str) -> set[str]:
    """Every task that must end before `name` may start (within the same list)."""
    seen: set[str] = set()
    todo = list(deps.get(name, ()))
    while todo:
        dep = todo.pop()
        if dep in seen or dep not in deps:
            continue
        seen.add(dep)
        todo.extend(deps[dep])
    return seen


def levels(deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Depth of each task in an acyclic graph (0 = starts at once); for drawing the graph."""
    memo: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in memo:
            memo[name] = 1 + max((depth(d) for d in deps[name] if d in deps), default=-1)
        return memo[name]

    for name in deps:
        depth(name)
    return memo

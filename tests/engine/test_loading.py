"""Definitions: every problem is reported with FILE:LINE:COL, all at once."""

from collections.abc import Callable
from pathlib import Path

import pytest

from shipline.engine.loading import load_pipeline, pipeline_schema
from shipline.exceptions import DefinitionError

Write = Callable[..., Path]


def problems(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        load_pipeline(path)
    return [f"{p.line}:{p.column}: {p.message}" for p in info.value.problems]


def test_the_design_example_loads(write: Write) -> None:
    path = write(
        """
        name: hello
        params:
          greeting: {default: hello, description: what to say}
        tasks:
          - name: produce
            steps:
              - run: echo "answer=42" >> "$SHIPLINE_OUTPUT"
            results: [answer]
          - name: consume
            when: ${{ tasks.produce.results.answer == '42' }}
            env:
              ANSWER: ${{ tasks.produce.results.answer }}
              GREETING: ${{ params.greeting }}
            steps:
              - run: echo "$GREETING $ANSWER"
        finally:
          - name: report
            steps: [{run: echo done}]
        """
    )
    pipeline = load_pipeline(path)
    assert [t.name for t in pipeline.tasks] == ["produce", "consume", "report"]
    assert pipeline.task("consume").needs == ["produce"]
    assert pipeline.task("report").is_finally


def test_unknown_keys_point_at_the_key(write: Write) -> None:
    path = write(
        """
        name: demo
        tasks:
          - name: a
            stesp: []
            steps: [{run: echo, shel: bash}]
        """
    )
    assert problems(path) == ["4:5: unknown key 'stesp'", "5:25: unknown key 'shel'"]


def test_references_are_checked_with_their_column(write: Write) -> None:
    path = write(
        """
        name: demo
        params:
          greeting: hi
        tasks:
          - name: produce
            steps: [{run: echo}]
            results: [answer]
          - name: consume
            env:
              A: ${{ tasks.produce.results.answr }}
              B: ${{ params.greetin }}
              C: ${{ tasks.nope.results.x }}
            steps:
              - run: |
                  echo one
                  echo ${{ tasks.consume.results.x }}
        """
    )
    assert problems(path) == [
        "10:14: 'tasks.produce.results.answr': task 'produce' has no result 'answr' (answer; add it to its `results:`)",
        "11:14: 'params.greetin': no param 'greetin' (params: greeting)",
        "12:14: 'tasks.nope.results.x': no task 'nope'",
        "16:20: 'tasks.consume.results.x': task 'consume' has no result 'x' (it declares none; add it to its `results:`)",
    ]


def test_a_result_of_a_task_that_may_not_have_run_yet(write: Write) -> None:
    path = write(
        """
        name: demo
        tasks:
          - name: a
            needs: []
            steps: [{run: echo}]
            results: [v]
          - name: b
            needs: []
            steps: [{run: 'echo ${{ tasks.a.results.v }}'}]
        """
    )
    assert problems(path) == ["9:29: 'tasks.a.results.v': task 'b' may start before 'a' ends; add 'a' to its `needs:`"]


def test_needs_cycles_and_unknown_names(write: Write) -> None:
    path = write(
        """
        name: demo
        tasks:
          - name: a
            needs: [c]
            steps: [{run: echo}]
          - name: b
            needs: [a, ghost]
            steps: [{run: echo}]
          - name: c
            needs: [b]
            steps: [{run: echo}]
        """
    )
    found = problems(path)
    assert "7:16: needs 'ghost': no such task in `tasks:`" in found
    assert "4:5: `needs` form a cycle: a -> c -> b -> a" in found


def test_bad_values_and_missing_fields(write: Write) -> None:
    path = write(
        """
        name: Not_A_Name
        timeout: soon
        tasks:
          - name: a
            retries: 99
        """
    )
    found = problems(path)
    assert any(p.startswith("1:7: name: 'Not_A_Name' is not a name shipline takes: write lower-case letters") for p in found)
    assert not any("should match pattern" in p for p in found), "no raw regex in a message"
    assert any(p.startswith("2:10: timeout: 'soon' is not a duration") for p in found)
    assert "5:14: tasks.0.retries: Input should be less than or equal to 10" in found


def test_yaml_syntax_error_has_a_position(write: Write) -> None:
    path = write("name: demo\ntasks:\n  - name: a\n    steps: [{run: echo}\n")
    [problem] = problems(path)
    assert problem.startswith("5:1: not valid YAML")


def test_duplicate_keys_are_an_error(write: Write) -> None:
    path = write("name: demo\nname: again\ntasks: [{name: a, steps: [{run: x}]}]\n")
    [problem] = problems(path)
    assert problem.startswith("2:1: not valid YAML")


def test_duplicate_task_names(write: Write) -> None:
    path = write("name: demo\ntasks:\n  - {name: a, steps: [{run: x}]}\n  - {name: a, steps: [{run: x}]}\n")
    assert problems(path) == ["4:12: task name 'a' is used twice; task names must be unique"]


def test_reusable_task_with_inputs(write: Write) -> None:
    write(
        """
        description: say something
        inputs:
          message: {description: what to say}
          times: {default: "1"}
        steps:
          - run: for i in $(seq ${{ inputs.times }}); do echo "${{ inputs.message }}"; done
        results: []
        """,
        "tasks/say.yaml",
    )
    path = write(
        """
        name: demo
        params: {word: hi}
        tasks:
          - name: say
            uses: ./tasks/say.yaml
            with: {message: "${{ params.word }}!"}
        """
    )
    task = load_pipeline(path).task("say")
    assert task.inputs == {"message": "${{ params.word }}!", "times": "1"}
    assert task.uses == "./tasks/say.yaml"


def test_reusable_task_missing_and_unknown_inputs(write: Write) -> None:
    write("inputs: {message: {}}\nsteps: [{run: 'echo ${{ params.x }}'}]\n", "tasks/say.yaml")
    path = write(
        """
        name: demo
        tasks:
          - name: say
            uses: ./tasks/say.yaml
            with: {mesage: hi}
          - name: other
            uses: ./tasks/missing.yaml
          - name: cat
            uses: shipline/nope
        """
    )
    found = problems(path)
    template = str((path.parent / "tasks/say.yaml").resolve())
    with pytest.raises(DefinitionError) as info:
        load_pipeline(path)
    files = {p.file for p in info.value.problems}
    assert template in files, "problems inside the reusable task name its own file"
    assert any("'params.x': unknown reference (expressions may use inputs.*, run.*)" in p for p in found)
    assert any("7:11: './tasks/missing.yaml': no such file" in p for p in found)
    assert any("9:11: no catalog task 'shipline/nope'" in p for p in found)


def test_workdir_may_not_leave_the_workspace(write: Write) -> None:
    path = write("name: demo\ntasks:\n  - name: a\n    workdir: ../../etc\n    steps: [{run: x}]\n")
    assert problems(path) == [
        "4:14: workdir '../../etc' must be a relative path inside the workspace (no '/' at the start, no '..')"
    ]


def test_schema_describes_the_file() -> None:
    schema = pipeline_schema()
    assert schema["title"] == "shipline pipeline"
    assert set(schema["required"]) == {"name"}
    assert schema["anyOf"] == [{"required": ["tasks"]}, {"required": ["uses"]}]
    assert "finally" in schema["properties"]


def test_a_definition_edited_between_two_loads_is_read_anew(write: Write) -> None:
    """Parsed trees are remembered by text: an edit, or the same text in another file, is never served stale."""
    path = write("name: first\ntasks: [{name: a, steps: [{run: echo one}]}]\n")
    assert load_pipeline(path).name == "first"
    path.write_text("name: second\ntasks: [{name: a, steps: [{run: echo two}]}]\n")
    again = load_pipeline(path)
    assert again.name == "second"
    assert again.tasks[0].steps[0].run == "echo two"
    broken = "name: x\ntasks: [\n"
    one, other = write(broken, "one.yaml"), write(broken, "other.yaml")
    for file in (one, other, one):
        with pytest.raises(DefinitionError) as info:
            load_pipeline(file)
        assert {p.file for p in info.value.problems} == {str(file)}, info.value.problems

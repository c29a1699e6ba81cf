"""The promotion edit: one service's version, in each layout, and nothing else in the files."""

from __future__ import annotations

import difflib
import json
import re
import subprocess

import pytest
import yaml

from shipline.domain.promotions import (
    Layout,
    PromotionEditError,
    Release,
    deployed_version,
    edit_version,
    files_to_edit,
    layout_of,
    promotion_body,
    promotion_branch,
    promotion_title,
)


def diff(old: str, new: str) -> list[str]:
    """The changed lines only, as `-old` / `+new`: everything else must be byte-identical."""
    return [
        line
        for line in difflib.ndiff(old.splitlines(keepends=True), new.splitlines(keepends=True))
        if line.startswith(("- ", "+ "))
    ]


# --- manifests ----------------------------------------------------------------------

DEPLOYMENTS = """\
# hello and its sidecar; do not touch the sidecar
apiVersion: apps/v1
kind: Deployment
metadata:
    name: hello   # four-space indentation on purpose
spec:
    replicas: 2
    template:
        spec:
            initContainers:
            -   name: migrate
                image: "127.0.0.1:5000/team/hello:1.1.0@sha256:0123456789abcdef"  # pinned by digest
            containers:
            -   name: app
                image: 127.0.0.1:5000/team/hello:1.1.0
                args: ['--port', "8080", {a: b}]
            -   name: sidecar
                image: 127.0.0.1:5000/team/hello-sidecar:1.1.0
---
# a second document: another service
apiVersion: apps/v1
kind: Deployment
metadata: {name: world}
spec:
  template:
    spec:
      containers: [{name: app, image: 'registry.example/world:2.0.0'}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: hello-report}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: report
              image: 'hello:1.1.0' # a short name is the same repository
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: hello}
spec: {ports: [{port: 80}]}
"""


def test_manifests_change_every_image_of_the_service_and_only_its_tag() -> None:
    files = {"manifests/apps.yaml": DEPLOYMENTS, "manifests/service.yaml": SERVICE}

    changed = edit_version("manifests", files, "hello", "1.2.0")

    assert list(changed) == ["manifests/apps.yaml"]
    assert diff(DEPLOYMENTS, changed["manifests/apps.yaml"]) == [
        '-                 image: "127.0.0.1:5000/team/hello:1.1.0@sha256:0123456789abcdef"  # pinned by digest\n',
        '+                 image: "127.0.0.1:5000/team/hello:1.2.0"  # pinned by digest\n',
        "-                 image: 127.0.0.1:5000/team/hello:1.1.0\n",
        "+                 image: 127.0.0.1:5000/team/hello:1.2.0\n",
        "-               image: 'hello:1.1.0' # a short name is the same repository\n",
        "+               image: 'hello:1.2.0' # a short name is the same repository\n",
    ]
    assert deployed_version("manifests", files, "hello") == "1.1.0"
    assert deployed_version("manifests", changed | {"manifests/service.yaml": SERVICE}, "hello") == "1.2.0"
    assert deployed_version("manifests", files, "world") == "2.0.0"
    assert deployed_version("manifests", files, "hello-sidecar") == "1.1.0"
    assert deployed_version("manifests", files, "nobody") is None


def test_manifests_of_another_service_in_the_same_flow_line() -> None:
    changed = edit_version("manifests", {"manifests/apps.yaml": DEPLOYMENTS}, "world", "2.1.0-rc.1")

    assert diff(DEPLOYMENTS, changed["manifests/apps.yaml"]) == [
        "-       containers: [{name: app, image: 'registry.example/world:2.0.0'}]\n",
        "+       containers: [{name: app, image: 'registry.example/world:2.1.0-rc.1'}]\n",
    ]


def test_a_version_already_deployed_changes_nothing() -> None:
    files = {"manifests/apps.yaml": DEPLOYMENTS}
    once = edit_version("manifests", files, "hello", "1.2.0")

    assert edit_version("manifests", once, "hello", "1.2.0") == {}
    assert edit_version("manifests", files, "world", "2.0.0") == {}


def test_json_manifests_stay_json_with_their_tabs() -> None:
    text = '{\n\t"apiVersion": "v1",\n\t"kind": "Pod",\n\t"metadata": {"name": "hello"},\n\t"spec": {\n\t\t"containers": [\n\t\t\t{"name": "app", "image": "127.0.0.1:5000/hello@sha256:feed"}\n\t\t]\n\t}\n}\n'

    changed = edit_version("manifests", {"manifests/pod.json": text}, "hello", "3.0.0")

    new = changed["manifests/pod.json"]
    assert new == text.replace('"127.0.0.1:5000/hello@sha256:feed"', '"127.0.0.1:5000/hello:3.0.0"')
    assert json.loads(new)["spec"]["containers"][0]["image"] == "127.0.0.1:5000/hello:3.0.0"
    assert deployed_version("manifests", {"manifests/pod.json": text}, "hello") == "sha256:feed"


def test_windows_line_endings_and_a_byte_order_mark_survive() -> None:
    text = "\ufeffkind: Pod\r\nspec:\r\n  containers:\r\n  - name: a\r\n    image: hello   # untagged\r\n"

    changed = edit_version("manifests", {"manifests/pod.yml": text}, "hello", "1.0.1")

    assert changed == {"manifests/pod.yml": text.replace("image: hello ", "image: hello:1.0.1 ")}
    assert deployed_version("manifests", {"manifests/pod.yml": text}, "hello") == "latest"


KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - apps.yaml   # the deployments
images:
  # hello is pinned by digest until the first promotion
  - digest: sha256:aaaa
    name: 127.0.0.1:5000/team/hello
    newTag: 1.1.0
  - {name: world, newTag: "2.0.0"}
  - name: other
"""


def test_kustomization_images_get_new_tag_and_lose_the_digest() -> None:
    files = {"manifests/kustomization.yaml": KUSTOMIZATION, "manifests/apps.yaml": DEPLOYMENTS}

    changed = edit_version("kustomize", files, "hello", "1.2.0")

    assert changed["manifests/kustomization.yaml"] == KUSTOMIZATION.replace(
        "  - digest: sha256:aaaa\n    name: 127.0.0.1:5000/team/hello\n    newTag: 1.1.0\n",
        "  - name: 127.0.0.1:5000/team/hello\n    newTag: 1.2.0\n",
    )
    assert diff(DEPLOYMENTS, changed["manifests/apps.yaml"])[1::2] == [
        '+                 image: "127.0.0.1:5000/team/hello:1.2.0"  # pinned by digest\n',
        "+                 image: 127.0.0.1:5000/team/hello:1.2.0\n",
        "+               image: 'hello:1.2.0' # a short name is the same repository\n",
    ]
    assert yaml.safe_load(changed["manifests/kustomization.yaml"])["images"][0] == {
        "name": "127.0.0.1:5000/team/hello",
        "newTag": "1.2.0",
    }


def test_kustomization_flow_entry_and_an_entry_without_a_tag() -> None:
    files = {"kustomization.yaml": KUSTOMIZATION}

    assert edit_version("kustomize", files, "world", "2.0.1") == {
        "kustomization.yaml": KUSTOMIZATION.replace('{name: world, newTag: "2.0.0"}', '{name: world, newTag: "2.0.1"}')
    }
    assert edit_version("kustomize", files, "other", "0.1.0") == {
        "kustomization.yaml": KUSTOMIZATION.replace("  - name: other\n", "  - name: other\n    newTag: 0.1.0\n")
    }
    assert deployed_version("kustomize", files, "hello") == "1.1.0"
    assert deployed_version("kustomize", files, "other") is None


def test_kustomization_digest_only_entries_become_tags() -> None:
    text = "images:\n- name: hello\n  digest: sha256:bbbb  # pinned\n- {name: reg/hello, digest: sha256:cccc}\n"

    changed = edit_version("kustomize", {"kustomization.yaml": text}, "hello", "1.0.0")

    assert changed == {
        "kustomization.yaml": "images:\n- name: hello\n  newTag: 1.0.0  # pinned\n- {name: reg/hello, newTag: 1.0.0}\n"
    }


def test_kustomization_flow_entries_over_several_lines() -> None:
    text = "images:\n- {name: hello,\n   digest: sha256:dddd}\n- {digest: sha256:eeee, name: reg/hello, newTag: 0.1.0}\n- {name: team/hello,\n   newTag: 0.1.0}\n"

    changed = edit_version("kustomize", {"kustomization.yaml": text}, "hello", "1.0.0")

    assert changed == {
        "kustomization.yaml": (
            "images:\n- {name: hello,\n   newTag: 1.0.0}\n- {name: reg/hello, newTag: 1.0.0}\n- {name: team/hello,\n   newTag: 1.0.0}\n"
        )
    }
    assert yaml.safe_load(changed["kustomization.yaml"])["images"] == [
        {"name": "hello", "newTag": "1.0.0"},
        {"name": "reg/hello", "newTag": "1.0.0"},
        {"name": "team/hello", "newTag": "1.0.0"},
    ]


def test_kustomization_block_entry_with_tag_and_digest_in_the_middle() -> None:
    text = "images:\n  - name: hello\n    digest: sha256:ffff   # pinned\n    newTag: 0.1.0\n  - name: world\n"

    changed = edit_version("kustomize", {"manifests/kustomization.yaml": text}, "hello", "1.0.0")

    assert changed == {"manifests/kustomization.yaml": "images:\n  - name: hello\n    newTag: 1.0.0\n  - name: world\n"}


def test_manifests_without_the_service_say_what_to_add() -> None:
    files = {"manifests/apps.yaml": DEPLOYMENTS, "manifests/service.yaml": SERVICE}

    with pytest.raises(PromotionEditError) as caught:
        edit_version("manifests", files, "payments", "1.0.0")

    assert str(caught.value) == (
        "manifests/: no container image named payments (.../payments:TAG) and no kustomization "
        "`images:` entry for it; the promotion needs one of them to edit"
    )
    assert caught.value.exit_code == 2


def test_a_file_that_does_not_parse_is_named_with_its_line() -> None:
    broken = "kind: Pod\nspec:\n  containers:\n  - image: [hello\n"

    with pytest.raises(PromotionEditError, match=r"^manifests/bad\.yaml:5:1: not valid YAML: .*fix the file"):
        edit_version("manifests", {"manifests/bad.yaml": broken}, "hello", "1.0.0")
    with pytest.raises(PromotionEditError, match=r"^manifests/bad\.json:2:\d+: not valid JSON"):
        edit_version("manifests", {"manifests/bad.json": '{"a":\n ,}'}, "hello", "1.0.0")


# --- umbrella chart -------------------------------------------------------------------

CHART = """\
apiVersion: v2
name: dev   # the environment
version: 0.1.0
dependencies:
  # services, one per dependency
  - name: hello
    version: "1.1.0"
    repository: oci://127.0.0.1:5000/charts
  - name: world
    alias: planet
    repository: oci://127.0.0.1:5000/charts
    version: 2.0.0
  - {name: extra, version: '0.3.0', repository: "file://../extra"}
  - name: fresh
    repository: oci://127.0.0.1:5000/charts
"""

VALUES = """\
hello:
  replicas: 2
planet:
  image:
    tag: 2.0.0   # pinned here too: promotions keep it in step
"""


def test_umbrella_chart_dependency_version() -> None:
    files = {"Chart.yaml": CHART, "values.yaml": VALUES}

    assert edit_version("umbrella", files, "hello", "1.2.0") == {"Chart.yaml": CHART.replace('"1.1.0"', '"1.2.0"')}
    assert edit_version("chart", files, "extra", "0.4.0") == {"Chart.yaml": CHART.replace("'0.3.0'", "'0.4.0'")}
    assert edit_version("chart", files, "fresh", "0.1.0") == {
        "Chart.yaml": CHART.replace("  - name: fresh\n", "  - name: fresh\n    version: 0.1.0\n")
    }
    assert deployed_version("umbrella", files, "hello") == "1.1.0"
    assert deployed_version("umbrella", files, "fresh") is None
    assert edit_version("umbrella", files, "hello", "1.1.0") == {}


def test_umbrella_chart_keeps_a_pinned_values_tag_in_step() -> None:
    changed = edit_version("umbrella", {"Chart.yaml": CHART, "values.yaml": VALUES}, "world", "2.1.0")

    assert changed == {
        "Chart.yaml": CHART.replace("    version: 2.0.0\n", "    version: 2.1.0\n"),
        "values.yaml": VALUES.replace("tag: 2.0.0 ", "tag: 2.1.0 "),
    }


def test_umbrella_chart_lock_follows_with_helms_own_digest() -> None:
    # Both locks as `helm dependency update` wrote them (helm 3, file:// dependency).
    chart = "apiVersion: v2\nname: env\nversion: 0.1.0\ndependencies:\n  - name: hello\n    version: 1.1.0\n    repository: file://../hello\n"
    lock = (
        "dependencies:\n- name: hello\n  repository: file://../hello\n  version: 1.1.0\n"
        "digest: sha256:8c3ba560e1a8b0ac547b6b0a60ed35a8534e937c4e2e0ba75c0c228cbb44b2b3\n"
        'generated: "2026-11-28T20:08:29.170478664Z"\n'
    )

    changed = edit_version("umbrella", {"Chart.yaml": chart, "Chart.lock": lock}, "hello", "1.2.0")

    assert changed == {
        "Chart.yaml": chart.replace("1.1.0", "1.2.0"),
        "Chart.lock": (
            "dependencies:\n- name: hello\n  repository: file://../hello\n  version: 1.2.0\n"
            "digest: sha256:6a9ebf9dd64d2f709417553a034546dd921673fd1f9b7e1ab9ee59a06e74eeb2\n"
            'generated: "2026-11-28T20:08:29.170478664Z"\n'
        ),
    }
    assert edit_version("umbrella", changed, "hello", "1.2.0") == {}


def test_umbrella_chart_without_the_service() -> None:
    with pytest.raises(PromotionEditError) as caught:
        edit_version("umbrella", {"Chart.yaml": CHART}, "payments", "1.0.0")

    assert str(caught.value) == (
        "Chart.yaml: no dependency named payments in `dependencies:`; the promotion needs "
        "`- name: payments` with `version:` to edit"
    )


# --- helmfile -------------------------------------------------------------------------

HELMFILE = """\
repositories:
- name: local
  url: 127.0.0.1:5000/charts
  oci: true

releases:
  - name: world   # first on purpose
    chart: local/world
    version: 2.0.0
  - name: hello
    chart: local/hello
    version: 1.1.0 # bumped by shipline
    values:
      - values/hello.yaml
    set:
      - {name: image.tag, value: "keep-me"}
  - chart: local/new
    name: new
"""


def test_helmfile_release_version() -> None:
    files = {"helmfile.yaml": HELMFILE}

    changed = edit_version("helmfile", files, "hello", "1.2.0")

    assert diff(HELMFILE, changed["helmfile.yaml"]) == [
        "-     version: 1.1.0 # bumped by shipline\n",
        "+     version: 1.2.0 # bumped by shipline\n",
    ]
    assert edit_version("helmfile", files, "new", "0.1.0") == {
        "helmfile.yaml": HELMFILE.replace("    name: new\n", "    name: new\n    version: 0.1.0\n")
    }
    assert deployed_version("helmfile", files, "world") == "2.0.0"
    assert edit_version("helmfile", files, "world", "2.0.0") == {}


def test_helmfile_without_the_service() -> None:
    with pytest.raises(PromotionEditError) as caught:
        edit_version("helmfile", {"helmfile.yaml": HELMFILE}, "payments", "1.0.0")

    assert str(caught.value) == (
        "helmfile.yaml: no release named payments in `releases:`; the promotion needs `- name: payments` with `version:` to edit"
    )


# --- hostile input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    ["1.2.0\nimage: evil", "1.2.0\n", "${{ secrets.token }}", "1.2.0: x", "v1.2.0", "1.2", "latest", "1.2.0 # x", "'1.2.0'", ""],
)
def test_versions_that_are_not_semver_are_refused(version: str) -> None:
    for layout, files in (
        ("manifests", {"manifests/apps.yaml": DEPLOYMENTS}),
        ("umbrella", {"Chart.yaml": CHART}),
        ("helmfile", {"helmfile.yaml": HELMFILE}),
    ):
        with pytest.raises(PromotionEditError, match="is not a version shipline promotes"):
            edit_version(layout, files, "hello", version)


def test_build_metadata_cannot_be_an_image_tag_but_can_be_a_chart_version() -> None:
    with pytest.raises(PromotionEditError, match="cannot be an image tag"):
        edit_version("manifests", {"manifests/apps.yaml": DEPLOYMENTS}, "hello", "1.2.0+build.5")

    changed = edit_version("helmfile", {"helmfile.yaml": HELMFILE}, "hello", "1.2.0+build.5")

    assert yaml.safe_load(changed["helmfile.yaml"])["releases"][1]["version"] == "1.2.0+build.5"


@pytest.mark.parametrize("service", ["Hello", "../hello", "hello:1", "a b", "-x", "hello\n", "", "${{x}}", "a" * 64])
def test_service_names_outside_the_pattern_are_refused(service: str) -> None:
    with pytest.raises(PromotionEditError, match="is not a service name"):
        edit_version("manifests", {"manifests/apps.yaml": DEPLOYMENTS}, service, "1.0.0")
    with pytest.raises(PromotionEditError, match="is not a service name"):
        promotion_branch(service)


def test_a_block_scalar_image_is_refused_with_its_line() -> None:
    text = "kind: Pod\nspec:\n  containers:\n  - image: >-\n      hello:1.0.0\n"

    with pytest.raises(PromotionEditError, match=r"^manifests/p\.yaml:4: a block scalar"):
        edit_version("manifests", {"manifests/p.yaml": text}, "hello", "1.1.0")


def test_unknown_layout() -> None:
    with pytest.raises(PromotionEditError, match="unknown environment layout 'flux'"):
        edit_version("flux", {}, "hello", "1.0.0")


# --- names ------------------------------------------------------------------------------


def test_title_and_branch() -> None:
    assert promotion_title("hello", "1.2.0") == "Promote hello to 1.2.0"
    assert promotion_branch("hello") == "shipline/promote/hello"
    assert promotion_branch("my_svc.v2") == "shipline/promote/my_svc.v2"


@pytest.mark.parametrize("service", ["hello", "a..b", "a.-b", "cache.lock", "x_y.z-9", "a...lock"])
def test_every_allowed_service_name_gives_a_git_valid_branch(service: str) -> None:
    branch = promotion_branch(service)

    checked = subprocess.run(["git", "check-ref-format", f"refs/heads/{branch}"], capture_output=True, check=False)
    assert checked.returncode == 0, branch
    assert branch.startswith("shipline/promote/")


def test_folded_branch_names_do_not_collide() -> None:
    names = ["a..b", "a-b", "a...b", "cache.lock", "cache"]

    assert len({promotion_branch(n) for n in names}) == len(names)
    assert re.fullmatch(r"shipline/promote/a-b-[0-9a-f]{8}", promotion_branch("a..b"))


# --- layouts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "layout"),
    [
        (["helmfile.yaml", "Chart.yaml", "manifests/a.yaml"], Layout.HELMFILE),
        (["Chart.yaml", "values.yaml", "manifests/kustomization.yaml"], Layout.UMBRELLA),
        (["manifests/kustomization.yaml", "manifests/a.yaml"], Layout.KUSTOMIZE),
        (["kustomization.yaml", "base/a.yaml"], Layout.KUSTOMIZE),
        (["manifests/a.yaml", "README.md"], Layout.MANIFESTS),
        (["manifests/"], Layout.MANIFESTS),
    ],
)
def test_layout_of_paths(paths: list[str], layout: Layout) -> None:
    assert layout_of(paths) == layout


def test_no_layout() -> None:
    with pytest.raises(PromotionEditError, match="no environment layout found: add manifests/"):
        layout_of(["README.md", "charts/x/Chart.yaml"])


def test_files_to_edit() -> None:
    paths = [
        "README.md",
        "manifests/b.yml",
        "manifests/a.yaml",
        "manifests/.hidden/x.yaml",
        "manifests/x.json",
        "kustomization.yaml",
    ]

    assert files_to_edit("kustomize", paths) == ["kustomization.yaml", "manifests/a.yaml", "manifests/b.yml", "manifests/x.json"]
    assert files_to_edit("chart", ["Chart.yaml", "Chart.lock", "values.yaml", "templates/x.yaml"]) == [
        "Chart.lock",
        "Chart.yaml",
        "values.yaml",
    ]
    assert files_to_edit("helmfile", ["helmfile.yaml", "values/hello.yaml"]) == ["helmfile.yaml"]


# --- the body ---------------------------------------------------------------------------

SHA = "3f2c1a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"


def test_body_lists_release_previous_version_and_commits() -> None:
    release = Release(
        service="hello",
        version="1.2.0",
        commit=SHA,
        image="127.0.0.1:5000/hello:1.2.0",
        image_digest="sha256:aaaa",
        chart="oci://127.0.0.1:5000/charts/hello:1.2.0",
        chart_digest="sha256:bbbb",
        run_url="http://127.0.0.1:8080/runs/42",
        source_url="http://127.0.0.1:3000/org/hello.git",
    )

    body = promotion_body(release, "1.1.0", [(SHA, "feat: greet in French"), ("b" * 40, "fix: typo\n\nlong body")])

    assert body == (
        "Promote **hello** to **1.2.0**.\n"
        "\n"
        "- Deployed now: 1.1.0\n"
        "- Version: 1.2.0\n"
        f"- Commit: [{SHA}](http://127.0.0.1:3000/org/hello/commit/{SHA})\n"
        "- Image: 127.0.0.1:5000/hello:1.2.0 (digest sha256:aaaa)\n"
        "- Chart: oci://127.0.0.1:5000/charts/hello:1.2.0 (digest sha256:bbbb)\n"
        "- Run: [the release run](http://127.0.0.1:8080/runs/42)\n"
        "\n"
        "### Commits since 1.1.0 (2)\n"
        "\n"
        f"- [3f2c1a9](http://127.0.0.1:3000/org/hello/commit/{SHA}) feat: greet in French\n"
        f"- [bbbbbbb](http://127.0.0.1:3000/org/hello/commit/{'b' * 40}) fix: typo\n"
        "\n"
        "Opened by shipline: merging it deploys this version; a newer release updates this pull request.\n"
    )


def test_body_escapes_outside_values_and_caps_the_list() -> None:
    commits = [(f"{i:040x}", f"chore: {i}") for i in range(60)]
    commits[0] = ("c" * 40, "<script>alert(1)</script> `x` [a](javascript:alert(1)) ![i](http://e/x.png) | ** _ @admin #1")
    release = Release(service="hello", version="1.2.0", commit="not a sha )[", run_url="javascript:alert(1)")

    body = promotion_body(release, None, commits)

    lines = body.splitlines()
    assert lines[2] == "- Deployed now: none (hello is new here)"
    assert lines[4] == "- Commit: not a sha \\)\\["
    assert lines[5] == "- Run: javascript:alert\\(1\\)"
    assert lines[7] == "### Commits in this release (60)"
    assert lines[9] == (
        "- ccccccc \\<script\\>alert\\(1\\)\\</script\\> \\`x\\` \\[a\\]\\(javascript:alert\\(1\\)\\) "
        "\\!\\[i\\]\\(http://e/x.png\\) \\| \\*\\* \\_ \\@admin \\#1"
    )
    assert lines[9 + 50] == "- and 10 more"
    assert "<script>" not in body and "](javascript" not in body


def test_body_caps_long_subjects() -> None:
    body = promotion_body(Release(service="hello", version="1.2.0"), "1.1.0", [("a" * 40, "x" * 500)])

    line = body.splitlines()[-3]
    assert line == "- aaaaaaa " + "x" * 199 + "…"

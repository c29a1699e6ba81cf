import pytest
import semver

from shipline.domain.versions import (
    Bump,
    VersionError,
    branch_slug,
    commit_bump,
    is_version,
    last_release_tag,
    next_release,
    plan_version,
    release_version,
)


@pytest.mark.parametrize(
    ("message", "bump"),
    [
        ("fix: off by one", Bump.PATCH),
        ("fix(api): off by one", Bump.PATCH),
        ("docs: typo", Bump.PATCH),
        ("Update README", Bump.PATCH),
        ("", Bump.PATCH),
        ("feat: login form", Bump.MINOR),
        ("Feat: capitalised type", Bump.MINOR),
        ("feat(ui): login form\n\nwith a body", Bump.MINOR),
        ("feat!: drop v1 API", Bump.MAJOR),
        ("refactor(core)!: new storage", Bump.MAJOR),
        ("fix: rename flag\n\nBREAKING CHANGE: --old is gone", Bump.MAJOR),
        ("feat: x\n\nBREAKING-CHANGE: y", Bump.MAJOR),
        # Not Conventional Commits: no space after the colon, the word in a sentence.
        ("feat:nospace", Bump.PATCH),
        ("fix: mention BREAKING CHANGE: inline is not a footer", Bump.PATCH),
        ("featured: not the feat type", Bump.PATCH),
    ],
)
def test_commit_bump_follows_conventional_commits(message: str, bump: Bump) -> None:
    assert commit_bump(message) is bump


def test_release_tags_are_strict_vXYZ() -> None:
    assert release_version("v1.2.3") == semver.Version(1, 2, 3)
    for tag in ("1.2.3", "v1.2", "v1.2.3-rc.1", "v01.2.3", "release-1", "v1.2.3.4"):
        assert release_version(tag) is None, tag


def test_last_release_tag_orders_by_semver_not_text() -> None:
    assert last_release_tag(["v0.9.0", "v0.10.0", "v0.2.0", "v1.0.0-rc.1", "latest"]) == "v0.10.0"
    assert last_release_tag(["nightly", "v2.0.0-beta.1"]) is None
    assert last_release_tag([]) is None


@pytest.mark.parametrize(
    ("tag", "messages", "expected"),
    [
        (None, [], "0.1.0"),
        (None, ["feat: first", "feat!: breaking"], "0.1.0"),
        ("v0.1.0", ["fix: a"], "0.1.1"),
        ("v0.1.0", ["chore: a", "docs: b"], "0.1.1"),
        ("v0.1.0", ["fix: a", "feat: b", "fix: c"], "0.2.0"),
        ("v0.1.3", ["feat: b"], "0.2.0"),
        ("v1.4.2", ["fix: a", "feat!: b"], "2.0.0"),
        ("v1.4.2", ["fix: a\n\nBREAKING CHANGE: b"], "2.0.0"),
        ("v1.4.2", [], "1.4.2"),
    ],
)
def test_next_release(tag: str | None, messages: list[str], expected: str) -> None:
    assert str(next_release(tag, messages)) == expected


def test_next_release_refuses_a_non_release_tag() -> None:
    with pytest.raises(VersionError, match="not a release tag"):
        next_release("v1.0.0-rc.1", ["fix: a"])


@pytest.mark.parametrize(
    ("branch", "slug"),
    [
        ("feature/Login_Form", "feature-login-form"),
        ("feature/$(touch x)", "feature-touch-x"),
        ("a..b", "a-b"),
        ("--force", "force"),
        ("UPPER", "upper"),
        ("dependabot/npm_and_yarn/lodash-4.17.21", "dependabot-npm-and-yarn-lodash-4-17-21"),
        ("////", "branch"),
        ("", "branch"),
        ("0123", "b0123"),
        ("renovate/ü-ñ", "renovate"),
    ],
)
def test_branch_slug(branch: str, slug: str) -> None:
    assert branch_slug(branch) == slug


def test_branch_slug_is_bounded_and_does_not_end_in_a_dash() -> None:
    slug = branch_slug("feature/" + "a" * 30 + "-" + "b" * 60)
    assert len(slug) <= 40
    assert not slug.endswith("-")
    assert slug.startswith("feature-aaa")


def test_default_branch_is_a_release_with_a_tag() -> None:
    plan = plan_version(last_tag="v0.1.0", messages=["feat: x"], branch="main", default_branch="main")
    assert (plan.version, plan.tag, plan.release) == ("0.2.0", "v0.2.0", True)


def test_first_release_without_any_tag() -> None:
    plan = plan_version(last_tag=None, messages=["init", "feat: a"], branch="main", default_branch="main")
    assert (plan.version, plan.tag) == ("0.1.0", "v0.1.0")


def test_feature_branch_is_a_prerelease_without_tag() -> None:
    plan = plan_version(last_tag="v0.1.0", messages=["fix: a", "fix: b"], branch="feature/Login", default_branch="main")
    assert (plan.version, plan.tag, plan.release) == ("0.1.1-feature-login.2", "", False)
    assert is_version(plan.version)


def test_pr_prerelease_wins_over_the_branch_even_on_main() -> None:
    plan = plan_version(last_tag="v0.1.0", messages=["feat: a"], branch="main", default_branch="main", pr="7")
    assert (plan.version, plan.tag) == ("0.2.0-pr-7.1", "")


def test_prerelease_n_grows_with_each_commit_and_sorts_above_the_last_release() -> None:
    versions = [
        plan_version(last_tag="v1.2.3", messages=["fix: x"] * n, branch="topic", default_branch="main").version
        for n in (1, 2, 10)
    ]
    assert versions == ["1.2.4-topic.1", "1.2.4-topic.2", "1.2.4-topic.10"]
    parsed = [semver.Version.parse(v) for v in versions]
    assert parsed == sorted(parsed)
    assert all(v > semver.Version(1, 2, 3) for v in parsed)


def test_a_branch_at_a_released_commit_is_still_above_that_release() -> None:
    plan = plan_version(last_tag="v1.2.3", messages=[], branch="topic", default_branch="main")
    assert plan.version == "1.2.4-topic.0"
    assert semver.Version.parse(plan.version) > semver.Version(1, 2, 3)


def test_rerun_on_a_released_commit_gives_the_same_release() -> None:
    plan = plan_version(last_tag="v1.2.3", messages=[], branch="main", default_branch="main")
    assert (plan.version, plan.tag) == ("1.2.3", "v1.2.3")


def test_a_detached_commit_is_named_by_its_hash() -> None:
    plan = plan_version(last_tag=None, messages=["a"], branch="", default_branch="main", commit="0123abcdef" * 4)
    assert plan.version == "0.1.0-commit-0123abc.1"
    assert plan.tag == ""


@pytest.mark.parametrize("pr", ["abc", "-1", "0", "1; rm -rf /"])
def test_pr_must_be_a_number(pr: str) -> None:
    with pytest.raises(VersionError, match="not a pull-request number"):
        plan_version(last_tag=None, messages=[], branch="main", default_branch="main", pr=pr)


def test_hostile_branch_names_give_valid_semver() -> None:
    for branch in ("feature/$(touch x)", "a..b", "-x", "x" * 300, "rm -rf /; echo", "ß/日本"):
        plan = plan_version(last_tag=None, messages=["a"], branch=branch, default_branch="main")
        assert is_version(plan.version), plan.version
        assert len(plan.version) <= 128

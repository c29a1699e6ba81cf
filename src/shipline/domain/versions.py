"""Service versions: the next release from Conventional Commits, and pre-releases for branches and PRs.

The rules are the contract of DESIGN.md ("Service pipelines"):

- the last `vX.Y.Z` tag plus the commits since it: `feat:` -> minor, `!` after the
  type or a `BREAKING CHANGE:` footer -> major, `fix:` and anything else -> patch;
  no tag yet -> `0.1.0`;
- on the default branch the version is that release, and `vX.Y.Z` is the tag to push;
- on another branch it is `X.Y.Z-<branch slug>.<n>`, with a PR `X.Y.Z-pr-<pr>.<n>`,
  where n is the number of commits since the last release tag (so it grows with each
  pushed commit, and a rerun of the same commit gets the same version).

Pure functions: the git side (which tags, which commits) is read elsewhere and
passed in.  SemVer parsing and ordering are the `semver` package's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import semver

TAG_PREFIX = "v"
SLUG_MAX = 40
"""Long branch names are cut: the version must stay a usable image tag (128 chars max)."""

_HEADER = re.compile(r"^(?P<type>[A-Za-z]+)(?:\([^()\n]*\))?(?P<bang>!)?:\s")
_BREAKING_FOOTER = re.compile(r"^BREAKING[ -]CHANGE:\s", re.MULTILINE)
_RELEASE_TAG = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


class Bump(IntEnum):
    """How far a commit moves the version; a set of commits moves it by the largest."""

    PATCH = 0
    MINOR = 1
    MAJOR = 2


class VersionError(ValueError):
    """Input that cannot give a version (a bad tag, a PR that is not a number)."""


def commit_bump(message: str) -> Bump:
    """The bump one commit message asks for, by Conventional Commits."""
    header = message.lstrip().split("\n", 1)[0]
    match = _HEADER.match(header)
    if (match and match.group("bang")) or _BREAKING_FOOTER.search(message):
        return Bump.MAJOR
    if match and match.group("type").lower() == "feat":
        return Bump.MINOR
    return Bump.PATCH


def release_version(tag: str) -> semver.Version | None:
    """`v1.2.3` -> 1.2.3; None for any other tag (pre-release tags, other names)."""
    if not _RELEASE_TAG.match(tag):
        return None
    return semver.Version.parse(tag.removeprefix(TAG_PREFIX))


def last_release_tag(tags: Iterable[str]) -> str | None:
    """The highest `vX.Y.Z` among tags (by SemVer order, not by text)."""
    releases = [(v, t) for t in tags if (v := release_version(t)) is not None]
    return max(releases)[1] if releases else None


def next_release(last_tag: str | None, messages: Sequence[str]) -> semver.Version:
    """The release the commits since last_tag make; no tag -> 0.1.0; no commits -> the tag's own version."""
    if last_tag is None:
        return semver.Version(0, 1, 0)
    current = release_version(last_tag)
    if current is None:
        raise VersionError(f"'{last_tag}' is not a release tag (vX.Y.Z)")
    if not messages:
        return current
    bump = max(commit_bump(m) for m in messages)
    if bump is Bump.MAJOR:
        return current.bump_major()
    if bump is Bump.MINOR:
        return current.bump_minor()
    return current.bump_patch()


def branch_slug(branch: str, limit: int = SLUG_MAX) -> str:
    """A branch name as a SemVer pre-release identifier: lower case, [a-z0-9-], bounded.

    `feature/Login_Form` -> `feature-login-form`.  A name with nothing usable in it
    gives `branch`; an all-digit name is prefixed (`b123`) because SemVer forbids
    leading zeros in numeric identifiers and `123` would sort as a number.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", branch.lower()).strip("-")
    slug = slug[:limit].rstrip("-")
    if not slug:
        return "branch"
    if slug.isdigit():
        slug = f"b{slug}"[:limit]
    return slug


@dataclass(frozen=True)
class VersionPlan:
    """What the version task decides for one run."""

    version: str
    """`X.Y.Z` or `X.Y.Z-<slug>.<n>`: the image tag, chart version and appVersion."""
    tag: str
    """`vX.Y.Z` to push at the end of the run, or "" (pre-releases push no tag)."""
    release: bool


def plan_version(
    *,
    last_tag: str | None,
    messages: Sequence[str],
    branch: str,
    default_branch: str,
    pr: str = "",
    commit: str = "",
) -> VersionPlan:
    """The version of a run: a release on the default branch, else a pre-release.

    messages are the commits since last_tag (all commits when there is none), newest
    first or last: the order does not matter.  n of a pre-release is len(messages).
    """
    base = next_release(last_tag, messages)
    pr = pr.strip()
    if not pr and branch and branch == default_branch:
        return VersionPlan(str(base), f"{TAG_PREFIX}{base}", True)
    if last_tag is not None and not messages:
        # A branch or PR at a released commit: the pre-release still sorts above it.
        base = base.bump_patch()
    if pr:
        if not pr.isdigit() or int(pr) <= 0:
            raise VersionError(f"pr '{pr}' is not a pull-request number")
        identifier = f"pr-{int(pr)}"
    elif branch:
        identifier = branch_slug(branch)
    elif _SHA.match(commit):
        identifier = f"commit-{commit[:7]}"
    else:
        identifier = "detached"
    version = base.replace(prerelease=f"{identifier}.{len(messages)}")
    return VersionPlan(str(version), "", False)


def is_version(text: str) -> bool:
    return bool(semver.Version.is_valid(text))

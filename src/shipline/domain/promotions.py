"""Promotion: the one edit a release makes to an environment repository, and its pull request's words.

A release of a service becomes a pull request on every environment repository that
lists the service (DESIGN.md, "Promotion (contract)"); the pull request changes that
service's version and nothing else, in whichever layout the repository uses:

    manifests, kustomize   every container image `.../SERVICE[:TAG][@DIGEST]` -> `.../SERVICE:VERSION`,
                           and a kustomization's `images:` entry for it -> `newTag: VERSION`
    umbrella (chart)       Chart.yaml `dependencies:` entry `name: SERVICE` -> `version: VERSION`
                           (Chart.lock follows with Helm's digest; values.yaml `SERVICE.image.tag`
                           follows when the repository pins one)
    helmfile               helmfile.yaml `releases:` entry `name: SERVICE` -> `version: VERSION`

Text in, text out: the files are read and written elsewhere.  ruamel.yaml composes each
file (YAML 1.2; JSON is YAML) only to find where the scalars to change are; the change
is a splice of those characters, so comments, quotes, key order, indentation, flow
style, long lines and line endings are the file's own, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shipline.domain.environments import SERVICE_PATTERN
from shipline.domain.versions import is_version
from shipline.exceptions import PromotionEditError

__all__ = [
    "HELMFILES",
    "KUSTOMIZATIONS",
    "MANIFEST_SUFFIXES",
    "Layout",
    "PromotionEditError",
    "Release",
    "deployed_version",
    "edit_version",
    "files_to_edit",
    "layout_of",
    "promotion_body",
    "promotion_branch",
    "promotion_title",
]

KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
HELMFILES = ("helmfile.yaml", "helmfile.yml")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
BRANCH_PREFIX = "shipline/promote/"


class Layout(StrEnum):
    """The article's layouts of an environment repository (docs/environments.md)."""

    MANIFESTS = "manifests"
    KUSTOMIZE = "kustomize"
    UMBRELLA = "umbrella"
    HELMFILE = "helmfile"


_ALIASES = {"chart": Layout.UMBRELLA}
_SERVICE = re.compile(SERVICE_PATTERN)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


# --- names ----------------------------------------------------------------------------


def promotion_title(service: str, version: str) -> str:
    """The pull request's title, exactly as the contract says: `Promote hello to 1.2.0`."""
    return f"Promote {service} to {version}"


def promotion_branch(service: str) -> str:
    """The one branch per service on an environment repository: `shipline/promote/hello`.

    Every name `SERVICE_PATTERN` allows gives a valid git ref: the two it allows that git
    does not (`a..b`, `x.lock`) get their dots folded and a short hash of the name, so
    two services never share a branch.
    """
    _check_service(service)
    if ".." not in service and not service.endswith(".lock"):
        return BRANCH_PREFIX + service
    folded = re.sub(r"\.{2,}", "-", service).removesuffix(".lock")
    return f"{BRANCH_PREFIX}{folded}-{hashlib.sha256(service.encode()).hexdigest()[:8]}"


# --- layouts ---------------------------------------------------------------------------


def layout_of(paths: Collection[str]) -> Layout:
    """The layout of a repository from its repo-relative paths (first match wins).

    `manifests/` (a trailing slash) stands for the directory itself; any path under it
    counts too.  No layout: PromotionEditError saying what to add.
    """
    names = {p.strip("/") for p in paths}
    if any(name in names for name in HELMFILES):
        return Layout.HELMFILE
    if "Chart.yaml" in names:
        return Layout.UMBRELLA
    if any(name in names or f"manifests/{name}" in names for name in KUSTOMIZATIONS):
        return Layout.KUSTOMIZE
    if any(p == "manifests/" or p.startswith("manifests/") for p in paths):
        return Layout.MANIFESTS
    raise PromotionEditError(
        "no environment layout found: add manifests/ (YAML files or a kustomization.yaml), "
        "a Chart.yaml (an umbrella chart) or a helmfile.yaml at the repository's root"
    )


def files_to_edit(layout: str, paths: Collection[str]) -> list[str]:
    """Which of a repository's paths `edit_version` needs for a layout, in path order."""
    kind = _layout(layout)
    if kind is Layout.HELMFILE:
        return [p for p in sorted(paths) if p in HELMFILES][:1]
    if kind is Layout.UMBRELLA:
        return [p for p in sorted(paths) if p in ("Chart.lock", "Chart.yaml", "values.yaml")]
    return [
        p
        for p in sorted(paths)
        if p in KUSTOMIZATIONS
        or (
            p.startswith("manifests/")
            and p.endswith(MANIFEST_SUFFIXES + ("/Kustomization",))
            and not any(part.startswith(".") for part in p.split("/"))
        )
    ]


def _layout(layout: str) -> Layout:
    try:
        return _ALIASES.get(layout) or Layout(layout)
    except ValueError:
        known = ", ".join([*Layout, *_ALIASES])
        raise PromotionEditError(f"unknown environment layout {layout!r}; one of {known}") from None


# --- the edit -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    text: str


@dataclass
class _Found:
    """What one layout's walk found for the service: edits per file and the versions seen."""

    splices: dict[str, list[_Splice]]
    current: list[str]

    def add(self, path: str, splice: _Splice) -> None:
        edits = self.splices.setdefault(path, [])
        if all(e.start != splice.start for e in edits):
            edits.append(splice)


def deployed_version(layout: str, files: Mapping[str, str], service: str) -> str | None:
    """The version the repository deploys for the service now; None when the service is not in it.

    manifests/kustomize: a kustomization's `newTag` for it wins (kustomize applies it),
    else the first matching image's tag (`latest` when it has none, the digest when it
    is pinned by digest only).
    """
    _check_service(service)
    found = _find(_layout(layout), files, service, None)
    return found.current[0] if found.current else None


def edit_version(layout: str, files: Mapping[str, str], service: str, version: str) -> dict[str, str]:
    """The files whose text changes to deploy `version` of `service` (path -> new text); {} when nothing does.

    `files` maps repo-relative paths to their text (see `files_to_edit`).  Raises
    PromotionEditError when the service is not in them, a file does not parse, or the
    service name or version is not one shipline releases.
    """
    kind = _layout(layout)
    _check_service(service)
    if not is_version(version):
        raise PromotionEditError(
            f"{version!r} is not a version shipline promotes (SemVer: X.Y.Z or X.Y.Z-PRE); "
            f"the release of {service} must come from its service pipeline"
        )
    if kind in (Layout.MANIFESTS, Layout.KUSTOMIZE) and not _TAG.fullmatch(version):
        raise PromotionEditError(
            f"{version!r} cannot be an image tag (letters, digits, '_', '.', '-', at most 128): "
            f"the manifests of {service} reference images by tag"
        )
    found = _find(kind, files, service, version)
    if not found.splices:
        raise PromotionEditError(_missing(kind, files, service))
    changed: dict[str, str] = {}
    for path, splices in found.splices.items():
        text = files[path]
        new = text
        for splice in sorted(splices, key=lambda s: s.start, reverse=True):
            new = new[: splice.start] + splice.text + new[splice.end :]
        if new != text:
            changed[path] = new
    if kind is Layout.UMBRELLA and "Chart.yaml" in changed and "Chart.lock" in files:
        lock = _relock(files["Chart.lock"], changed["Chart.yaml"], service, version)
        if lock != files["Chart.lock"]:
            changed["Chart.lock"] = lock
    return changed


def _relock(lock: str, chart: str, service: str, version: str) -> str:
    """Chart.lock in step with the edited Chart.yaml, else `helm dependency build` refuses it as out of sync.

    The lock's entry for the service gets the version and `digest:` is recomputed the
    way Helm does (resolver.HashReq: SHA-256 of the JSON of both dependency lists).
    `generated:` stays: it is informational, and this edit is pure.  A lock without an
    entry for the service is already out of sync and left as it is.
    """
    found = _Found({}, [])
    for doc in _documents(lock, "Chart.lock"):
        _entries(found, "Chart.lock", lock, doc, "dependencies", service, "version", version)
    edits = found.splices.get("Chart.lock")
    if edits is None:
        return lock
    for splice in sorted(edits, key=lambda s: s.start, reverse=True):
        lock = lock[: splice.start] + splice.text + lock[splice.end :]
    loader = YAML(typ="safe", pure=True)
    try:
        wanted = (loader.load(chart) or {}).get("dependencies") or []
        locked = (loader.load(lock) or {}).get("dependencies") or []
    except (YAMLError, AttributeError) as exc:
        raise PromotionEditError(f"Chart.lock: cannot be brought in step with Chart.yaml: {exc}") from exc
    listed = json.dumps([[_helm_dependency(d) for d in wanted], [_helm_dependency(d) for d in locked]], separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        listed = listed.replace(char, escaped)  # Go's encoding/json escapes these
    digest = "sha256:" + hashlib.sha256(listed.encode()).hexdigest()
    for doc in _documents(lock, "Chart.lock"):
        node = _get(doc, "digest")
        if isinstance(node, ScalarNode):
            return lock[: node.start_mark.index] + _replace(node, digest, "Chart.lock").text + lock[node.end_mark.index :]
    return lock


def _helm_dependency(entry: object) -> dict[str, object]:
    """One dependency as Go's json.Marshal writes helm's chart.Dependency: field order, omitempty."""
    d = entry if isinstance(entry, Mapping) else {}
    out: dict[str, object] = {"name": str(d.get("name") or "")}
    if d.get("version"):
        out["version"] = str(d["version"])
    out["repository"] = str(d.get("repository") or "")
    if d.get("condition"):
        out["condition"] = str(d["condition"])
    if d.get("tags"):
        out["tags"] = [str(t) for t in d["tags"]]
    if d.get("enabled") is True:
        out["enabled"] = True
    if d.get("import-values"):
        out["import-values"] = _sorted_maps(d["import-values"])
    if d.get("alias"):
        out["alias"] = str(d["alias"])
    return out


def _sorted_maps(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _sorted_maps(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_maps(v) for v in value]
    return value


def _check_service(service: str) -> None:
    if not _SERVICE.fullmatch(service):
        raise PromotionEditError(
            f"{service!r} is not a service name (lower-case letters, digits, '.', '_', '-'; at most 63); "
            "check the environment's `services:`"
        )


def _missing(kind: Layout, files: Mapping[str, str], service: str) -> str:
    if kind is Layout.HELMFILE:
        name = next((p for p in files if p in HELMFILES), "helmfile.yaml")
        return (
            f"{name}: no release named {service} in `releases:`; the promotion needs `- name: {service}` with `version:` to edit"
        )
    if kind is Layout.UMBRELLA:
        return (
            f"Chart.yaml: no dependency named {service} in `dependencies:`; the promotion needs "
            f"`- name: {service}` with `version:` to edit"
        )
    where = "manifests/" if all(p.startswith("manifests/") for p in files) else ", ".join(sorted(files)) or "manifests/"
    return (
        f"{where}: no container image named {service} (.../{service}:TAG) and no kustomization "
        f"`images:` entry for it; the promotion needs one of them to edit"
    )


def _find(kind: Layout, files: Mapping[str, str], service: str, version: str | None) -> _Found:
    found = _Found({}, [])
    if kind is Layout.HELMFILE:
        for path in sorted(p for p in files if p in HELMFILES)[:1]:
            for doc in _documents(files[path], path):
                _entries(found, path, files[path], doc, "releases", service, "version", version)
        return found
    if kind is Layout.UMBRELLA:
        aliases: list[str] = []
        if "Chart.yaml" in files:
            for doc in _documents(files["Chart.yaml"], "Chart.yaml"):
                aliases += _entries(found, "Chart.yaml", files["Chart.yaml"], doc, "dependencies", service, "version", version)
        if "values.yaml" in files:
            for doc in _documents(files["values.yaml"], "values.yaml"):
                for key in aliases:
                    _values_tag(found, "values.yaml", doc, key, version)
        return found
    kustomized: list[str] = []
    for path in sorted(files):
        if path.rsplit("/", 1)[-1] in KUSTOMIZATIONS:
            text = files[path]
            for doc in _documents(text, path):
                kustomized += _kustomize_images(found, path, text, doc, service, version)
    images: list[str] = []
    for path in sorted(files):
        if path.rsplit("/", 1)[-1] in KUSTOMIZATIONS or not path.endswith(MANIFEST_SUFFIXES):
            continue
        text = files[path]
        is_json = path.endswith(".json")
        if is_json:
            _check_json(text, path)
        for doc in _documents(text.replace("\t", " ") if is_json else text, path):
            for node in _containers(doc):
                images += _image(found, path, node, service, version)
    found.current = kustomized + images
    return found


def _documents(text: str, path: str) -> list[Node]:
    try:
        return [d for d in YAML(typ="rt").compose_all(text) if d is not None]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise PromotionEditError(
            f"{path}{at}: not valid YAML: {exc.problem or exc.context}; fix the file before promoting"
        ) from exc
    except YAMLError as exc:
        raise PromotionEditError(f"{path}: not valid YAML: {exc}; fix the file before promoting") from exc


def _check_json(text: str, path: str) -> None:
    try:
        json.loads(text)
    except ValueError as exc:
        at = f":{exc.lineno}:{exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise PromotionEditError(f"{path}{at}: not valid JSON: {exc}; fix the file before promoting") from exc


def _pairs(node: Node) -> Iterator[tuple[str, ScalarNode, Node]]:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                yield str(key.value), key, value


def _get(node: Node, name: str) -> Node | None:
    return next((value for key, _, value in _pairs(node) if key == name), None)


def _scalar(node: Node | None) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def _replace(node: ScalarNode, value: str, path: str) -> _Splice:
    """A splice that writes value in the scalar's own style (plain, 'single' or "double")."""
    if node.style == "'":
        text = "'" + value.replace("'", "''") + "'"
    elif node.style == '"':
        text = json.dumps(value)
    elif node.style in ("|", ">"):
        line = node.start_mark.line + 1
        raise PromotionEditError(f"{path}:{line}: a block scalar ({node.style}) holds {value!r}'s place; write it on one line")
    else:
        text = value
    return _Splice(node.start_mark.index, node.end_mark.index, text)


def _insert_after(entry: Node, key: ScalarNode, value: Node, text: str, name: str, new: str) -> _Splice:
    """A splice adding `name: new` beside the pair key: value, in the mapping's own style."""
    end = value.end_mark.index
    if _flow(entry):
        return _Splice(end, end, f", {name}: {new}")
    line_start = text.rfind("\n", 0, key.start_mark.index) + 1
    indent = " " * (key.start_mark.index - line_start)
    eol = text.find("\n", end)
    if eol == -1:
        return _Splice(len(text), len(text), f"\n{indent}{name}: {new}")
    newline = "\r\n" if text[eol - 1 : eol] == "\r" else "\n"
    cut = eol - 1 if newline == "\r\n" else eol
    return _Splice(cut, cut, f"{newline}{indent}{name}: {new}")


def _flow(node: Node) -> bool:
    return bool(getattr(node, "flow_style", False))


def _entries(
    found: _Found, path: str, text: str, doc: Node, field: str, service: str, key: str, version: str | None
) -> list[str]:
    """Entries of the list `field` (releases, dependencies) named service: their `key` gets the version.

    Returns the names under which the entry's values live (alias or name).
    """
    names: list[str] = []
    entries = _get(doc, field)
    if not isinstance(entries, SequenceNode):
        return names
    for entry in entries.value:
        if _scalar(_get(entry, "name")) != service:
            continue
        names.append(_scalar(_get(entry, "alias")) or service)
        current = _get(entry, key)
        if isinstance(current, ScalarNode) and current.value != "":
            found.current.append(str(current.value))
        if version is None:
            continue
        if isinstance(current, ScalarNode):
            if current.value != version:
                found.add(path, _replace(current, version, path))
            else:
                found.splices.setdefault(path, [])
        else:
            name_key, name_value = next((k, v) for n, k, v in _pairs(entry) if n == "name")
            found.add(path, _insert_after(entry, name_key, name_value, text, key, version))
    return names


def _values_tag(found: _Found, path: str, doc: Node, key: str, version: str | None) -> None:
    section = _get(doc, key)
    image = _get(section, "image") if section is not None else None
    tag = _get(image, "tag") if image is not None else None
    if version is not None and isinstance(tag, ScalarNode) and tag.value not in ("", version):
        found.add(path, _replace(tag, version, path))


def _kustomize_images(found: _Found, path: str, text: str, doc: Node, service: str, version: str | None) -> list[str]:
    seen: list[str] = []
    images = _get(doc, "images")
    if not isinstance(images, SequenceNode):
        return seen
    for entry in images.value:
        name = _scalar(_get(entry, "name"))
        if name is None or not (name == service or name.endswith("/" + service)):
            continue
        tag, digest = _get(entry, "newTag"), _get(entry, "digest")
        if isinstance(tag, ScalarNode):
            seen.append(str(tag.value))
        elif isinstance(digest, ScalarNode):
            seen.append(str(digest.value))
        if version is None:
            continue
        found.splices.setdefault(path, [])
        pairs = {n: (k, v) for n, k, v in _pairs(entry)}
        if isinstance(digest, ScalarNode):
            # kustomize lets a digest win over newTag: the pin goes, the tag takes its place.
            digest_key = pairs["digest"][0]
            if isinstance(tag, ScalarNode):
                found.add(path, _replace(tag, version, path))
                found.add(path, _remove_pair(entry, text, digest_key, digest))
            else:
                found.add(path, _Splice(digest_key.start_mark.index, digest.end_mark.index, f"newTag: {version}"))
        elif isinstance(tag, ScalarNode):
            if tag.value != version:
                found.add(path, _replace(tag, version, path))
        else:
            name_key, name_value = pairs["name"]
            found.add(path, _insert_after(entry, name_key, name_value, text, "newTag", version))
    return seen


def _remove_pair(entry: Node, text: str, key: ScalarNode, value: Node) -> _Splice:
    """A splice dropping `key: value` from its mapping (its whole line in block style)."""
    start, end = key.start_mark.index, value.end_mark.index
    line_start = text.rfind("\n", 0, start) + 1
    lead = text[line_start:start]
    if _flow(entry):
        before = text.rfind(",", 0, start)
        if before != -1 and text[before + 1 : start].strip() == "":
            return _Splice(before, end, "")
        after = text.find(",", end)
        if after == -1:
            return _Splice(start, end, "")
        rest = text[after + 1 :]
        return _Splice(start, after + 1 + len(rest) - len(rest.lstrip(" ")), "")
    eol = text.find("\n", end)
    eol = len(text) if eol == -1 else eol + 1
    if lead.strip() == "":
        return _Splice(line_start, eol, "")
    # `- digest: ...` opens its list item: keep the dash, the next key moves up to it.
    indent = len(text[eol:]) - len(text[eol:].lstrip(" "))
    return _Splice(start, eol + min(indent, start - line_start), "")


def _containers(node: Node) -> Iterator[ScalarNode]:
    """The `image` scalars of every containers/initContainers list anywhere in a document."""
    if isinstance(node, MappingNode):
        for name, _, value in _pairs(node):
            if name in ("containers", "initContainers") and isinstance(value, SequenceNode):
                for container in value.value:
                    image = _get(container, "image")
                    if isinstance(image, ScalarNode):
                        yield image
            else:
                yield from _containers(value)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _containers(item)


def _split_image(ref: str) -> tuple[str, str, str]:
    """`host:5000/team/hello:1.0@sha256:ab` -> ("host:5000/team/hello", "1.0", "sha256:ab")."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest
    return name, "", digest


def _image(found: _Found, path: str, node: ScalarNode, service: str, version: str | None) -> list[str]:
    repository, tag, digest = _split_image(str(node.value).strip())
    if repository.rsplit("/", 1)[-1] != service:
        return []
    if version is not None:
        found.splices.setdefault(path, [])
        if tag != version or digest:
            found.add(path, _replace(node, f"{repository}:{version}", path))
    return [tag or (digest or "latest")]


# --- the pull request's body ----------------------------------------------------------

COMMITS_SHOWN = 50
SUBJECT_MAX = 200
VALUE_MAX = 300
_HEX = re.compile(r"^[0-9a-f]{7,64}$")
# Markup anywhere in a line (values never start one), HTML, entities, math, and the
# forge's own references: `@user` would notify someone, `#12` would link an issue.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>!|~&$@#])")


@dataclass(frozen=True)
class Release:
    """What a service pipeline released (its run's results), as the promotion shows it."""

    service: str
    version: str
    commit: str = ""
    image: str = ""
    image_digest: str = ""
    chart: str = ""
    chart_digest: str = ""
    run_url: str = ""
    source_url: str = ""
    """The service's repository (web or git URL): links the commits."""


def promotion_body(release: Release, previous: str | None, commits: Sequence[tuple[str, str]]) -> str:
    """The pull request's description, in Markdown, every outside value shown as text.

    commits are (sha, subject) from newest to oldest, the commits since `previous`.
    """
    service, version = _text(release.service), _text(release.version)
    lines = [f"Promote **{service}** to **{version}**.", ""]
    if previous:
        lines.append(f"- Deployed now: {_text(previous)}")
    else:
        lines.append(f"- Deployed now: none ({service} is new here)")
    lines.append(f"- Version: {version}")
    if release.commit:
        lines.append(f"- Commit: {_commit(release.commit, release.source_url, full=True)}")
    if release.image:
        lines.append(f"- Image: {_text(release.image)}" + _digest(release.image_digest))
    if release.chart:
        lines.append(f"- Chart: {_text(release.chart)}" + _digest(release.chart_digest))
    if release.run_url:
        run = _link("the release run", release.run_url)
        lines.append(f"- Run: {run}")
    if commits:
        since = f"since {_text(previous)}" if previous else "in this release"
        lines += ["", f"### Commits {since} ({len(commits)})", ""]
        for sha, subject in commits[:COMMITS_SHOWN]:
            lines.append(f"- {_commit(sha, release.source_url, full=False)} {_text(_subject(subject), SUBJECT_MAX)}")
        if len(commits) > COMMITS_SHOWN:
            lines.append(f"- and {len(commits) - COMMITS_SHOWN} more")
    lines += ["", "Opened by shipline: merging it deploys this version; a newer release updates this pull request."]
    return "\n".join(lines) + "\n"


def _subject(message: str) -> str:
    return message.strip().split("\n", 1)[0]


def _text(value: str, limit: int = VALUE_MAX) -> str:
    """An outside value as Markdown text: one line, bounded, every markup character escaped."""
    flat = " ".join(value.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", flat)


def _digest(digest: str) -> str:
    return f" (digest {_text(digest)})" if digest else ""


def _url(value: str) -> str | None:
    """An http(s) URL fit for a link target, or None: anything else stays text."""
    url = value.strip()
    if not re.match(r"^https?://[^\s<>()\"'`\\]+$", url) or len(url) > 2000:
        return None
    return url


def _link(label: str, target: str) -> str:
    url = _url(target)
    return f"[{_text(label)}]({url})" if url else _text(target)


def _commit(sha: str, source_url: str, *, full: bool) -> str:
    sha = sha.strip().lower()
    if not _HEX.match(sha):
        return _text(sha, 64)
    shown = sha if full else sha[:7]
    base = _url(source_url)
    if base is None:
        return shown
    return f"[{shown}]({base.removesuffix('/').removesuffix('.git')}/commit/{sha})"

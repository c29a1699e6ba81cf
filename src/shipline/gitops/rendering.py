"""The desired state of an environment: a checkout of its repository, rendered to objects.

One repository holds one of the article's three layouts, found by what is at
its root:

    helmfile.yaml        releases: one `helm template` per release
    Chart.yaml           an umbrella chart: `helm dependency build`, `helm template`
    manifests/           YAML files (multi-document), or a kustomization.yaml in it
    kustomization.yaml   (at the root) rendered with `kubectl kustomize`

Every problem names the file (and line, where YAML says it) and what to fix;
a `RenderError` is bad input: nothing is applied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipline.domain.environments import ObjectError, apply_rank, duplicates, key_of, place
from shipline.domain.promotions import HELMFILES, KUSTOMIZATIONS, MANIFEST_SUFFIXES, layout_of
from shipline.domain.promotions import Layout as Layout  # where the layouts were named first: rendering.Layout stays
from shipline.exceptions import PromotionEditError, UsageError
from shipline.integrations.templating import TemplateError, Templater, is_plain_http

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader


class RenderError(UsageError):
    """The repository's content cannot be rendered: bad input, nothing is applied."""


@dataclass
class Rendered:
    layout: Layout
    objects: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """Where each object came from (a file, `release NAME: template`), in step with `objects`."""


def detect(root: Path) -> Layout:
    """The layout of a checkout: `layout_of` on what is at its root (and in manifests/)."""
    candidates = [*HELMFILES, "Chart.yaml", *KUSTOMIZATIONS, *(f"manifests/{n}" for n in KUSTOMIZATIONS)]
    paths = [name for name in candidates if (root / name).is_file()]
    if (root / "manifests").is_dir():
        paths.append("manifests/")
    try:
        return layout_of(paths)
    except PromotionEditError as exc:
        raise RenderError(f"{root}: {exc}") from exc


def render(
    root: Path, namespace: str, *, cluster: bool = False, release: str | None = None, templater: Templater | None = None
) -> Rendered:
    """Render a checkout.  Namespaced objects get `namespace` (with `cluster`, only those that name none)."""
    root = root.resolve()
    layout = detect(root)
    own = templater is None
    tools = templater or Templater()
    try:
        if layout == Layout.MANIFESTS:
            result = _manifests(root)
        elif layout == Layout.KUSTOMIZE:
            result = _kustomize(root, tools)
        elif layout == Layout.UMBRELLA:
            result = _umbrella(root, namespace, release, tools)
        else:
            result = _helmfile(root, namespace, tools)
    finally:
        if own:
            tools.close()
    placed = place(result.objects, namespace, force=not cluster)
    dups = duplicates(placed)
    if dups:
        where: dict[str, list[str]] = {}
        for obj, source in zip(placed, result.sources, strict=True):
            where.setdefault(str(key_of(obj)), []).append(source)
        listed = "; ".join(f"{key} (in {' and '.join(where[str(key)])})" for key in dups)
        raise RenderError(f"the same object is rendered twice: {listed}; keep one")
    pairs = sorted(zip(placed, result.sources, strict=True), key=lambda pair: apply_rank(pair[0]))
    result.objects = [obj for obj, _ in pairs]
    result.sources = [source for _, source in pairs]
    return result


# --- YAML ---------------------------------------------------------------------------


def _load_all(text: str) -> list[Any]:
    """YAML as kubectl reads it: YAML 1.1 (`0644` is octal, `yes` is true), with libyaml."""
    return list(yaml.load_all(text, Loader=_Loader))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _doc_lines(text: str) -> list[int]:
    """1-based line where each YAML document starts, in the order `load_all` yields them."""
    starts: list[int] = []
    content_first = False
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(r"^---(\s|$)", line):
            if not starts and content_first:
                starts.append(1)
            starts.append(number + 1)
        elif not starts and line.strip() and not line.lstrip().startswith("#"):
            content_first = True
    return starts or [1]


def parse_documents(text: str, source: str) -> Iterator[tuple[dict[str, Any], str]]:
    """The objects of a multi-document YAML text, each with where it came from.

    `kind: List` is opened into its items, as kubectl does.  Empty documents are skipped.
    """
    documents = parse_raw(text, source)
    starts = _doc_lines(text)
    index = 0
    for doc in documents:
        if doc is None:
            index += 1
            continue
        line = starts[index] if index < len(starts) else 1
        index += 1
        where = f"{source}:{line}"
        if not isinstance(doc, Mapping):
            raise RenderError(f"{where}: a manifest is a mapping (apiVersion:, kind:, metadata:), not {type(doc).__name__}")
        obj = _jsonable(doc)
        if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
            for item in obj["items"]:
                yield _checked(item, where), where
            continue
        yield _checked(obj, where), where


def _checked(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise RenderError(f"{where}: a manifest is a mapping (apiVersion:, kind:, metadata:)")
    try:
        key_of(obj)
    except ObjectError as exc:
        raise RenderError(f"{where}: {exc}") from exc
    return obj


def _collect(rendered: Rendered, text: str, source: str) -> None:
    for obj, where in parse_documents(text, source):
        rendered.objects.append(obj)
        rendered.sources.append(where)


def _helm_output(rendered: Rendered, text: str, prefix: str) -> None:
    """helm template's output: documents that each start with a `# Source: CHART/templates/x.yaml` line."""
    for chunk in re.split(r"(?m)^---\s*$", text):
        match = re.search(r"(?m)^# Source: (.+)$", chunk)
        source = f"{prefix}{match.group(1).strip()}" if match else prefix.rstrip(": ")
        _collect(rendered, chunk, source)


def _relative(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --- layouts ----------------------------------------------------------------------


def _manifests(root: Path) -> Rendered:
    rendered = Rendered(Layout.MANIFESTS)
    base = root / "manifests"
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES and not _hidden(p, base))
    for path in files:
        shown = _relative(root, path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RenderError(f"{shown}: cannot read: {exc}") from exc
        if path.suffix == ".json":
            try:
                json.loads(text)
            except ValueError as exc:
                raise RenderError(f"{shown}: not valid JSON: {exc}") from exc
        _collect(rendered, text, shown)
    if not rendered.objects:
        raise RenderError(f"{_relative(root, base)}/: holds no manifests (.yaml, .yml or .json files with objects)")
    return rendered


def _hidden(path: Path, base: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def _kustomize(root: Path, tools: Templater) -> Rendered:
    directory = root / "manifests" if any((root / "manifests" / n).is_file() for n in KUSTOMIZATIONS) else root
    shown = _relative(root, directory / "kustomization.yaml")
    try:
        text = tools.kustomize(directory)
    except TemplateError as exc:
        raise RenderError(f"{shown}: kustomize cannot build it: {exc.detail}") from exc
    rendered = Rendered(Layout.KUSTOMIZE)
    _collect(rendered, text, f"{shown} (kustomize output)")
    return rendered


def _chart_meta(chart: Path, shown: str) -> dict[str, Any]:
    try:
        text = (chart / "Chart.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RenderError(f"{shown}: cannot read: {exc}") from exc
    documents = [d for d in parse_raw(text, shown) if d is not None]
    meta = documents[0] if len(documents) == 1 else None
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise RenderError(f"{shown}: a Chart.yaml needs at least `apiVersion: v2`, `name:` and `version:`")
    return dict(meta)


def _prepare_chart(chart: Path, shown: str, tools: Templater) -> None:
    """Fetch a chart's dependencies into its charts/ (HTTP repositories are added first)."""
    meta = _chart_meta(chart, shown)
    deps = meta.get("dependencies") or []
    if not isinstance(deps, list) or not deps:
        return
    plain_http = False
    for dep in deps:
        repo = str(dep.get("repository", "")) if isinstance(dep, Mapping) else ""
        if repo.startswith(("http://", "https://")):
            try:
                tools.add_repo(repo)
            except TemplateError as exc:
                raise RenderError(
                    f"{shown}: dependency {dep.get('name')!r}: repository {repo} cannot be read: {exc.detail}"
                ) from exc
        elif repo.startswith("oci://") and is_plain_http(repo):
            plain_http = True
    try:
        tools.dependency_build(chart, plain_http=plain_http)
    except TemplateError as exc:
        names = ", ".join(f"{d.get('name')} {d.get('version')}" for d in deps if isinstance(d, Mapping))
        raise RenderError(f"{shown}: its dependencies ({names}) cannot be fetched: {exc.detail}") from exc


def _umbrella(root: Path, namespace: str, release: str | None, tools: Templater) -> Rendered:
    meta = _chart_meta(root, "Chart.yaml")
    _prepare_chart(root, "Chart.yaml", tools)
    name = release or str(meta["name"])
    try:
        text = tools.template(name, str(root), namespace=namespace)
    except TemplateError as exc:
        raise RenderError(f"Chart.yaml: the umbrella chart {meta['name']!r} does not render: {exc.detail}") from exc
    rendered = Rendered(Layout.UMBRELLA)
    _helm_output(rendered, text, "")
    return rendered


# --- helmfile -----------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HelmfileRepository(_Spec):
    name: str
    url: str
    oci: bool = False


class SetValue(_Spec):
    name: str
    value: Any


class Release(_Spec):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$")
    namespace: str | None = None
    chart: str
    version: str | None = None
    values: list[str | dict[str, Any]] = []
    set: list[SetValue] = []
    installed: bool = True
    # Keys that change how helmfile installs, not what it renders: accepted, ignored.
    labels: dict[str, Any] = {}
    needs: list[str] = []
    wait: bool | None = None
    timeout: int | None = None
    atomic: bool | None = None
    create_namespace: bool | None = Field(default=None, alias="createNamespace")


class Helmfile(_Spec):
    repositories: list[HelmfileRepository] = []
    releases: list[Release] = Field(min_length=1)
    helm_defaults: dict[str, Any] = Field(default={}, alias="helmDefaults")


def _helmfile_spec(root: Path) -> tuple[Path, Helmfile]:
    path = next(root / n for n in HELMFILES if (root / n).is_file())
    shown = path.name
    text = path.read_text(encoding="utf-8")
    if "{{" in text:
        raise RenderError(f"{shown}: helmfile templates ({{{{ ... }}}}) are not supported; write plain YAML")
    documents = [d for d in parse_raw(text, shown) if d is not None]
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        raise RenderError(f"{shown}: a helmfile is one YAML mapping with `releases:`")
    try:
        return path, Helmfile.model_validate(_jsonable(documents[0]))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {what}")
        raise RenderError(f"{shown}: " + "; ".join(problems)) from exc


def parse_raw(text: str, source: str) -> list[Any]:
    """Every document of a YAML text; RenderError with FILE:LINE:COL when it is not YAML."""
    try:
        return _load_all(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise RenderError(f"{source}{at}: not valid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise RenderError(f"{source}: not valid YAML: {exc}") from exc


def _inside(root: Path, base: Path, name: str, what: str) -> Path:
    path = (base / name).resolve()
    if not path.is_relative_to(root):
        raise RenderError(f"{what}: {name!r} is outside the repository; keep values files and charts in it")
    return path


def _helmfile(root: Path, namespace: str, tools: Templater) -> Rendered:
    path, spec = _helmfile_spec(root)
    shown = path.name
    repos = {r.name: r for r in spec.repositories}
    values_dir = tools_scratch = root / ".shipline-render"
    tools_scratch.mkdir(exist_ok=True)
    jobs: list[tuple[Release, str, str | None, list[Path]]] = []
    for release in spec.releases:
        if not release.installed:
            continue
        what = f"{shown}: release {release.name!r}"
        chart, repo_url = _resolve_chart(root, path.parent, release, repos, what, tools)
        values: list[Path] = []
        for i, item in enumerate(release.values):
            if isinstance(item, str):
                file = _inside(root, path.parent, item, what)
                if not file.is_file():
                    raise RenderError(f"{what}: values file {item!r} does not exist")
                values.append(file)
            else:
                inline = values_dir / f"{release.name}-{i}.yaml"
                inline.write_text(json.dumps(item))
                values.append(inline)
        jobs.append((release, chart, repo_url, values))

    def one(job: tuple[Release, str, str | None, list[Path]]) -> str:
        release, chart, repo_url, values = job
        what = f"{shown}: release {release.name!r}"
        sets = [(s.name, str(s.value)) for s in release.set]
        try:
            return tools.template(
                release.name,
                chart,
                namespace=release.namespace or namespace,
                version=release.version,
                values=values,
                sets=sets,
                repo=repo_url,
            )
        except TemplateError as exc:
            if _is_missing_version(exc.detail) and release.version:
                raise RenderError(
                    f"{what}: chart {release.chart} version {release.version} does not exist "
                    f"(or cannot be fetched); check the version: {exc.detail}"
                ) from exc
            raise RenderError(f"{what}: chart {release.chart} does not render: {exc.detail}") from exc

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            outputs = list(pool.map(one, jobs))
    finally:
        for leftover in values_dir.glob("*"):
            leftover.unlink()
        values_dir.rmdir()
    rendered = Rendered(Layout.HELMFILE)
    for (release, *_), text in zip(jobs, outputs, strict=True):
        _helm_output(rendered, text, f"release {release.name}: ")
    return rendered


def _is_missing_version(detail: str) -> bool:
    lowered = detail.lower()
    return (
        "not found" in lowered or "no chart version" in lowered or "manifest unknown" in lowered or "invalid_reference" in lowered
    )


def _resolve_chart(
    root: Path,
    base: Path,
    release: Release,
    repos: dict[str, HelmfileRepository],
    what: str,
    tools: Templater,
) -> tuple[str, str | None]:
    """The chart argument for `helm template` (and `--repo`), from a release's `chart:`."""
    chart = release.chart
    if chart.startswith("oci://"):
        return chart, None
    local = base / chart
    if chart.startswith(("./", "../", "/")) or local.is_dir():
        directory = _inside(root, base, chart, what)
        if not (directory / "Chart.yaml").is_file():
            raise RenderError(f"{what}: chart {chart!r} is not a chart directory (no Chart.yaml)")
        _prepare_chart(directory, f"{_relative(root, directory)}/Chart.yaml", tools)
        return str(directory), None
    repo_name, sep, name = chart.partition("/")
    if sep and repo_name in repos:
        repo = repos[repo_name]
        if repo.oci or repo.url.startswith("oci://"):
            url = repo.url if repo.url.startswith("oci://") else "oci://" + repo.url
            return f"{url.rstrip('/')}/{name}", None
        return name, repo.url
    raise RenderError(
        f"{what}: chart {chart!r} is neither oci://..., a directory in the repository, nor REPO/NAME with REPO in `repositories:`"
    )

"""What a service run released, in one line: commit -> tag -> image digest -> chart version.

The same version string is in each part (the tag's `vX.Y.Z`, the image tag, the chart
version), so a person can follow a deployed chart back to its commit and the other way.
"""

from __future__ import annotations

from collections.abc import Mapping


def release_trace(results: Mapping[str, str]) -> str | None:
    """`commit C -> tag T -> image I@D -> chart C V`, or None when the run released nothing traceable."""
    commit = results.get("commit", "")
    image, digest = results.get("image", ""), results.get("image-digest", "")
    chart, chart_version = results.get("chart", ""), results.get("chart-version", "")
    if not commit or not (image or chart):
        return None
    tag = results.get("tag", "")
    parts = [f"commit {commit[:12]}", f"tag {tag}" if tag else "no tag (pre-release)"]
    if image:
        parts.append(f"image {image}{'@' + digest if digest else ''}")
    if chart:
        parts.append(f"chart {chart} {chart_version}".rstrip())
    return " -> ".join(parts)

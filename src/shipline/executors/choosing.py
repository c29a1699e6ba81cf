"""Which executor runs the steps: `SHIPLINE_EXECUTOR` (`local`, the default, or `kubernetes`)."""

from __future__ import annotations

from shipline.executors.base import Executor
from shipline.settings import Settings


def make_executor(settings: Settings) -> Executor:
    if settings.executor == "kubernetes":
        from shipline.executors.kubernetes import KubernetesExecutor  # lightkube only when it is used

        return KubernetesExecutor.from_settings(settings)
    from shipline.executors.local import LocalExecutor

    return LocalExecutor.from_settings(settings)

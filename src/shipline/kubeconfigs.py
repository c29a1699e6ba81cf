"""A kubeconfig's certificates and key kept in memory, never in a temporary file.

Given `client-key-data` (and `client-certificate-data`, `certificate-authority-data`),
lightkube writes each to a temporary file every time it makes a client, and deletes it
when the holder is collected: a process stopped or killed at that moment left the
cluster's key in TMPDIR.  Here each is a memfd, read through `/proc/self/fd/N`: never on a
disk, and gone with the process.
"""

from __future__ import annotations

import base64
import copy
import os
import threading

from lightkube.config.kubeconfig import KubeConfig, SingleConfig

_IN_MEMORY: dict[bytes, str] = {}
"""Certificates and keys of the kubeconfigs this process has read, by content: each a memfd,
kept for the process's life (as many as the distinct certificates it has seen)."""
_IN_MEMORY_LOCK = threading.Lock()


def _in_memory(name: str, data: str) -> str:
    """A path that reads `data` (base64) and names no file on any disk: `/proc/self/fd/N` of a memfd."""
    content = base64.b64decode(data)
    with _IN_MEMORY_LOCK:
        path = _IN_MEMORY.get(content)
        if path is None:
            fd = os.memfd_create(f"shipline-{name}", os.MFD_CLOEXEC)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            path = _IN_MEMORY[content] = f"/proc/self/fd/{fd}"
        return path


def keys_in_memory(config: SingleConfig) -> SingleConfig:
    """The config with its inline certificates and key (`*-data`) as paths to memfds; without
    memfds (not Linux), the config as it was."""
    if not hasattr(os, "memfd_create"):
        return config
    cluster, user = copy.copy(config.cluster), copy.copy(config.user)
    if cluster.certificate_auth_data:
        cluster.certificate_auth = _in_memory("ca", cluster.certificate_auth_data)
        cluster.certificate_auth_data = None
    if user is not None and user.client_cert_data and user.client_key_data:
        user.client_cert = _in_memory("cert", user.client_cert_data)
        user.client_key = _in_memory("key", user.client_key_data)
        user.client_cert_data = user.client_key_data = None
    return config._replace(cluster=cluster, user=user)


def kubeconfig_in_memory(config: KubeConfig) -> KubeConfig:
    """A kubeconfig file's current context alone, as `keys_in_memory` makes it."""
    single = config.get()
    if single is None:
        return config
    single = keys_in_memory(single)
    return KubeConfig.from_one(
        cluster=single.cluster,
        user=single.user,
        context_name=single.context_name,
        namespace=single.context.namespace,
        fname=single.fname,
    )

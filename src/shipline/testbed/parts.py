"""What the testbed is made of, at which pinned version: data only, no I/O.

A *part* is one thing `shipline testbed build` installs or builds, and one stamp
file in the cache.  Pinned versions are part of the stamp's name, so changing a
pin here makes the next `build` redo exactly that part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KUBERNETES_VERSION = "v1.34.4"
"""k8s.io/kubernetes; its staging modules (k8s.io/api, ...) are the matching v0.Y.Z."""

HELM_VERSION = "v3.19.5"
KWOK_VERSION = "v0.7.0"
COREDNS_VERSION = "v1.14.7"
# v1.27.3 needs gitea.dev/actions-proto-go@v0.6.0, gitea.dev/sdk@v1.1.0 and
# gitlab.com/gitlab-org/api/client-go/v2@v2.42.0, which the module proxy here refuses (403).
GITEA_VERSION = "v1.26.0"

DEBIAN_PACKAGES: tuple[str, ...] = (
    "git",
    "buildah",
    "skopeo",
    "docker-registry",
    "postgresql",
    # A static shell for images built FROM scratch: no base image can be pulled here.
    "busybox-static",
    # A later issue's browser tests.
    "chromium",
    "chromium-driver",
    # Not needed by kube-apiserver (we build etcd 3.6 with Kubernetes, as 1.34 wants
    # etcd >= 3.5); installed because other tests and people use `etcdctl`.
    "etcd-server",
    "etcd-client",
    # The real node: container runtime, CNI plugins, iptables for kube-proxy.
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    # The runner image's root file system, from Debian's packages.
    "mmdebstrap",
)

# Programs each Debian package must leave behind; checked by `build` and by tests.
DEBIAN_PROGRAMS: dict[str, str] = {
    "git": "/usr/bin/git",
    "buildah": "/usr/bin/buildah",
    "skopeo": "/usr/bin/skopeo",
    "docker-registry": "/usr/bin/docker-registry",
    "busybox": "/bin/busybox",
    "chromium": "/usr/bin/chromium",
    "chromedriver": "/usr/bin/chromedriver",
    "containerd": "/usr/bin/containerd",
    "containerd-shim-runc-v2": "/usr/bin/containerd-shim-runc-v2",
    "ctr": "/usr/bin/ctr",
    "runc": "/usr/sbin/runc",
    "cni-bridge": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
    "mmdebstrap": "/usr/bin/mmdebstrap",
}


def staging_version(kubernetes_version: str) -> str:
    """k8s.io/kubernetes v1.34.4 is published with staging modules at v0.34.4."""
    major, minor, patch = kubernetes_version.lstrip("v").split(".", 2)
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes_version!r}: expected v1.Y.Z")
    return f"v0.{minor}.{patch}"


@dataclass(frozen=True)
class GoPart:
    """A part built with the go command from the Go module proxy."""

    name: str
    module: str
    version: str
    programs: tuple[str, ...]
    """The executables it leaves in its bin directory."""
    packages: tuple[str, ...]
    """Import paths of the main packages, built in one `go build` so they share work."""
    tags: tuple[str, ...] = ()
    cgo: bool = False
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        """Names the stamp file and the bin directory; changes when the pin changes."""
        return f"{self.name}-{self.version}"


HELM = GoPart(
    name="helm",
    module="helm.sh/helm/v3",
    version=HELM_VERSION,
    programs=("helm",),
    packages=("helm.sh/helm/v3/cmd/helm",),
)

KWOK = GoPart(
    name="kwok",
    module="sigs.k8s.io/kwok",
    version=KWOK_VERSION,
    programs=("kwok",),
    packages=("sigs.k8s.io/kwok/cmd/kwok",),
)

KUBERNETES = GoPart(
    name="kubernetes",
    module="k8s.io/kubernetes",
    version=KUBERNETES_VERSION,
    programs=("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    packages=(
        # etcd at the version k8s.io/kubernetes itself requires: always compatible.
        "go.etcd.io/etcd/server/v3",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kubectl",
    ),
)

KUBELET = GoPart(
    # The real node's programs, from the same k8s.io/kubernetes pin as the control plane:
    # a part of its own, so the control plane's stamp and binaries stay as they are.
    name="kubelet",
    module="k8s.io/kubernetes",
    version=KUBERNETES_VERSION,
    programs=("kubelet", "kube-proxy"),
    packages=("k8s.io/kubernetes/cmd/kubelet", "k8s.io/kubernetes/cmd/kube-proxy"),
)

COREDNS = GoPart(
    # Cluster DNS for the real node's pods, run on the host, bound to the node's address.
    name="coredns",
    module="github.com/coredns/coredns",
    version=COREDNS_VERSION,
    programs=("coredns",),
    packages=("github.com/coredns/coredns",),
)

GITEA = GoPart(
    name="gitea",
    module="code.gitea.io/gitea",
    version=GITEA_VERSION,
    programs=("gitea",),
    packages=(".",),
    tags=("sqlite", "sqlite_unlock_notify"),
    cgo=True,
)

GO_PARTS: tuple[GoPart, ...] = (HELM, KWOK, KUBERNETES, GITEA, KUBELET, COREDNS)
"""In build order: the quick ones first, so a failure there shows before the long build."""

IMAGES_PART = "images"
"""The base images (pause, runner), built with mmdebstrap and buildah: see testbed/images.py."""

ALL_PART_NAMES: tuple[str, ...] = ("debian", *(p.name for p in GO_PARTS), IMAGES_PART)


def go_part(name: str) -> GoPart:
    for part in GO_PARTS:
        if part.name == name:
            return part
    raise KeyError(name)


def part_of_program(program: str) -> str:
    """Which part provides a program: what to name in `shipline testbed build --only`."""
    for part in GO_PARTS:
        if program in part.programs:
            return part.name
    return "debian"

"""The testbed: real components on 127.0.0.1 for shipline's tests and for trying it by hand.

An OCI registry, a Gitea forge and a Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, with kwok simulating nodes), plus the CLIs
that talk to them (git, buildah, skopeo, helm, kubectl).

    parts.py       what is installed or built, at which pinned version (pure data)
    layout.py      where the cache and the state live (pure)
    gomod.py       the wrapper go.mod that builds Kubernetes' commands (pure)
    building.py    `shipline testbed build`: apt-get and go build, cached by stamp files
    ports.py       which loopback port each service listens on (pure)
    certs.py       the cluster's CA, serving and client certificates, SA signing key
    configs.py     config files, kubeconfigs and the env file, as text (pure)
    processes.py   detached processes with pid files and logs
    services.py    the services: how each starts and how it answers a health check
    running.py     `up`, `status`, `down`
    fixtures.py    the pytest plugin
"""

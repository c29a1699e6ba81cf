"""Repository URLs: one spelling per repository, and never a credential in one.

A token in a URL (`https://ghp_XXXX@github.com/o/r.git`) would be shown by
every listing, passed to every run as `repo_url`, printed by git and kept in
the database.  So a URL that carries one is refused where it enters
(`check_url`), and anything shown or handed on goes through `public_url`,
which drops whatever an older version let in.  An SSH user name
(`git@host:o/r.git`, `ssh://git@host/o/r.git`) is not a credential and stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from shipline.exceptions import UsageError

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_SCP = re.compile(r"^[\w.-]+@([\w.-]+):(?!//)(.*)$")
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")

TOKEN_HELP = (
    "register the URL without them and give git the token another way: the server's "
    "`git ls-remote` (--poll) uses the git credentials of the user running the server "
    "(e.g. `git config --global credential.helper store` and a line "
    "`https://USER:TOKEN@HOST` in that user's ~/.git-credentials), and a pipeline's steps get "
    "a token from a secret (`shipline secrets set NAME`, then `${{ secrets.NAME }}`)"
)


@dataclass(frozen=True)
class _Parts:
    scheme: str
    userinfo: str | None  # None: no '@' in the authority
    hostport: str
    rest: str  # the path, query and fragment, as written


def _split(url: str) -> _Parts | None:
    """scheme://[userinfo@]hostport/rest, or None for scp-like URLs and paths."""
    m = _SCHEME.match(url)
    if not m:
        return None
    after = url[m.end() :]
    cut = min((i for i in (after.find(c) for c in "/?#") if i != -1), default=len(after))
    authority, rest = after[:cut], after[cut:]
    userinfo, at, hostport = authority.rpartition("@")
    return _Parts(m.group(1).lower(), userinfo if at else None, hostport, rest)


def _is_credential(parts: _Parts) -> bool:
    if parts.userinfo is None:
        return False
    return parts.scheme not in _SSH_SCHEMES or ":" in parts.userinfo


def has_credentials(text: str) -> bool:
    """Whether this is a URL with a token or password in it (an SSH user name is none)."""
    parts = _split(text.strip())
    return parts is not None and _is_credential(parts)


def url_secrets(text: str) -> list[str]:
    """The credentials in a URL (the password, or a bare token), as written and %-decoded; none in others."""
    parts = _split(text.strip())
    if parts is None or not _is_credential(parts):
        return []
    assert parts.userinfo is not None
    user, colon, password = parts.userinfo.partition(":")
    secret = password if colon else user
    return list(dict.fromkeys(s for s in (secret, unquote(secret)) if s))


def public_url(url: str) -> str:
    """The URL without credentials (an SSH user name stays): what is shown and handed to runs."""
    parts = _split(url)
    if parts is None or not _is_credential(parts):
        return url
    assert parts.userinfo is not None
    user = parts.userinfo.partition(":")[0] + "@" if parts.scheme in _SSH_SCHEMES else ""
    return f"{url[: len(parts.scheme)]}://{user}{parts.hostport}{parts.rest}"


def check_url(url: str) -> str:
    """A repository URL as given, or UsageError naming what is wrong with it and what to do."""
    if not url or url.startswith("-"):
        raise UsageError(f"repository URL {url!r} is not a URL or path git can use")
    parts = _split(url)
    if parts is None:
        return url
    if has_credentials(url):
        raise UsageError(
            f"repository URL {public_url(url)!r} carries credentials before '@' (a token or a password); "
            "they would be shown to everyone who can read the repository list and handed to every run. "
            f"Give {public_url(url)!r} instead, and {TOKEN_HELP}"
        )
    host, port = parts.hostport, ""
    if not host.startswith("["):  # an IPv6 literal keeps its colons
        host, _, port = host.partition(":")
    elif "]:" in host:
        host, _, port = host.rpartition(":")
    # `https://user:p/ss@host/...` splits at the '/' inside the password: show no part of
    # what comes before the last '@'.
    shown = re.sub(r"^([a-z][a-z0-9+.-]*://)[^?#]*@", r"\1***@", url, flags=re.IGNORECASE)
    if parts.scheme != "file" and not host:
        raise UsageError(f"repository URL {shown!r} names no host; write SCHEME://HOST/OWNER/REPO")
    if port and not port.isdigit():
        raise UsageError(
            f"repository URL {shown!r}: {'***' if '@' in url else port!r} after the host is not a port number; "
            "if it is part of a password, do not put credentials in the URL: " + TOKEN_HELP
        )
    return url


def url_key(url: str) -> str:
    """One spelling per repository: no scheme, user, `.git` or trailing slash; host in lower case.

    `https://Forge.example/o/r.git`, `git@forge.example:o/r.git` and
    `ssh://git@forge.example/o/r` all become `forge.example/o/r`.  Never
    raises: payload URLs come from outside.
    """
    url = url.strip()
    scp = _SCP.match(url)
    if scp:
        host, path = scp.group(1), scp.group(2)
    elif "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:  # a broken IPv6 literal: it matches nothing registered
            return url[:500]
        host = parts.netloc.rpartition("@")[2]
        path = parts.path
        if parts.scheme == "file":
            host = ""
    else:
        host, path = "", url
    path = path.rstrip("/")
    path = path.removesuffix(".git").rstrip("/")
    key = f"{host.lower()}/{path.lstrip('/')}" if host else path
    return key[:500]

"""shipline: a self-hosted delivery system for cloud-native services."""

import sys

__version__ = "0.1.0"

# httpx imports its own command-line client, and with it rich and pygments (~25 ms of CPU),
# whenever those happen to be installed, as they are beside shipline.  shipline never runs
# that client; each `shipline step` that talks HTTP would pay for it.  (A None entry makes
# that one import fail, which httpx expects and answers with a stub.)
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

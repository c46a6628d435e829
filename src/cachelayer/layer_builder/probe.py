"""Ask a built layer's own packages which providers it holds and which AWS services they use.

Run as a script by the host interpreter with ``-I -S`` (no site-packages, no user site) and the
layer's package directory as the only extra path, so only what the layer carries is seen.
Printing JSON on stdout is its whole interface; it imports nothing from the host's cachelayer.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List


def probe(site: str) -> Dict[str, Any]:
    """Load the layer's plugins through its own ``cachelayer.plugins`` and describe them."""
    sys.path.insert(0, site)
    from cachelayer import plugins  # the layer's copy, found first on sys.path

    _pm, registry = plugins.discover()
    providers: List[Dict[str, Any]] = []
    for name in registry.names():
        info = registry.by_name[name]
        providers.append(
            {
                "name": info.provider_type.name,
                "route": info.provider_type.route,
                "services": sorted(str(s) for s in info.provider_type.services),
                "plugin": info.plugin,
                "distribution": info.distribution,
                "version": info.version,
            }
        )
    broken = [
        {"plugin": b.plugin, "distribution": b.distribution, "error": b.error}
        for b in registry.broken
    ]
    return {"providers": providers, "broken": broken}


if __name__ == "__main__":
    json.dump(probe(sys.argv[1]), sys.stdout)

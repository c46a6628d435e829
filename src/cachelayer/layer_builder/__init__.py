"""The layer builder: assemble, prune, zip and publish the extension as a Lambda layer."""

from __future__ import annotations

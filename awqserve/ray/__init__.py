"""awqserve on Ray Serve: N engine replicas behind one OpenAI endpoint (docs/SCALING.md).

Needs the optional extra (`pip install awqserve[ray]`); nothing else in awqserve imports this package,
so the single-process server runs without Ray installed.

`awqserve.ray:app` is an application builder for `serve run` and Ray Serve config files; it takes
`awqserve serve`'s flags as arguments, e.g. `serve run awqserve.ray:app replicas=2 enforce-eager=true`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ray.serve import Application


def app(args: Mapping[str, Any] | None = None) -> "Application":
    """Build the Ray Serve application from `awqserve serve` flag names (see `application.app`)."""
    from awqserve.ray.application import app as build

    return build(args)


__all__ = ["app"]

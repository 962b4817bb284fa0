"""The chat page: static files shipped inside the package and served by the app at `/` and `/ui/...`.

Nothing here touches the engine; the page talks to the server through the public HTTP API, like any
other client (docs/HTTP_API.md, "Web page").
"""
from awqserve.ui.routes import STATIC_DIR, StaticAssets, add_ui_routes

__all__ = ["STATIC_DIR", "StaticAssets", "add_ui_routes"]

"""``mediafm browse``: a local web page over a catalog (issue 20).

``catalog.py`` is the read-only view of a store and what lies beside it (embeddings,
the extract source folder, a probe report); ``app.py`` is the FastAPI app and the server
handle; ``static/`` holds the page (HTML, CSS, plain JavaScript; no build step, no CDN).
"""

from mediafm_jax.browse.app import BrowseServer, create_app
from mediafm_jax.browse.catalog import Catalog

__all__ = ["BrowseServer", "Catalog", "create_app"]

"""The live dashboard: one page of vanilla JS and CSS, served by the API, with no outside assets.

The page polls the JSON API; nothing here runs on the server besides serving these files.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"
DOCS = STATIC_DIR / "docs.html"  # Swagger UI over the local copy the API serves

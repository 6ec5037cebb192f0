"""PNG plots rendered headless, embeddable in Dagster markdown metadata."""

from __future__ import annotations

import base64
import io


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported when first needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(figure)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Inline image for markdown metadata: the UI shows it without access to the store."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"

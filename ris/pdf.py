"""HTML to PDF on the server, with WeasyPrint: the printable page and its PDF share one
template. Nothing is fetched while rendering (no files, no URLs), so a template can never
make the server reach out."""

from __future__ import annotations

from typing import Any


class PdfUnavailable(Exception):
    """WeasyPrint or the Pango libraries it needs are missing on this machine."""


def _no_fetch(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ValueError(f"PDF rendering fetches nothing ({url})")


def html_to_pdf(html: str) -> bytes:
    try:
        import weasyprint  # Pango is loaded here; import lazily so pages work without it.
    except (ImportError, OSError) as error:
        raise PdfUnavailable(
            "PDF rendering needs WeasyPrint and Pango (Debian: libpango-1.0-0 libpangoft2-1.0-0)."
        ) from error
    return weasyprint.HTML(string=html, url_fetcher=_no_fetch).write_pdf()

"""The built viewer (frontend/dist, made by `make install`) as production serves it.

collectstatic gives the entry a hashed name (viewer.<hash>.js) while chunks import each
other by their own names: a chunk that imported the entry would load it a second time
and start a second viewer.
"""

import re
from pathlib import Path

from django.conf import settings

DIST = Path(settings.BASE_DIR) / "frontend" / "dist"


def test_the_viewer_is_built():
    assert (DIST / "viewer.js").is_file(), "run `make install` (scripts/build-viewer.sh)"
    assert (DIST / "viewer.css").is_file()


def test_no_chunk_imports_the_entry_that_is_served_under_a_hashed_name():
    entry = (DIST / "viewer.js").read_text()
    assert not re.search(r"\bexport\s*\{", entry), "the entry must export nothing"
    for chunk in (DIST / "chunks").glob("*.js"):
        assert "viewer.js" not in chunk.read_text(), f"{chunk.name} imports the entry"


def test_the_decoders_run_in_a_web_worker_next_to_the_bundle():
    workers = list((DIST / "assets").glob("decodeImageFrameWorker-*.js"))
    assert workers, "the image decoder worker is missing from the build"
    assert list((DIST / "assets").glob("openjpegwasm_decode-*.wasm")), "JPEG 2000 codec"

"""Fetch the LAC 2.1.2 sdist from the package index into a cache folder, checksum checked.

Not ``pip download``: for an sdist pip prepares its metadata, which runs the
package's ``setup.py`` (LAC's imports ``pkg_resources`` and probes for paddle; under
pip's build isolation with a current setuptools it fails with ``No module named
'pkg_resources'``, and the download is discarded). The index lists the file with
its SHA-256 (PEP 691 JSON, or PEP 503 HTML links ``…#sha256=…``); this downloads
that one file and checks it against the pinned checksum. Offline machines pass the
path of a copy to :func:`read_lac_full` instead.
"""
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Union
from urllib.parse import urljoin

from .sdist import SDIST_NAME, SDIST_SHA256, SdistError, sha256_of

INDEX_URL = "https://pypi.org/simple/"
PROJECT = "lac"  # the normalized project name (PEP 503)
_JSON = "application/vnd.pypi.simple.v1+json"
_TIMEOUT = 60

Opener = Callable[..., Any]


def fetch_lac_sdist(
    cache_dir: Union[str, Path], index_url: str = INDEX_URL, opener: Optional[Opener] = None
) -> Path:
    """The LAC sdist in ``cache_dir``, downloaded only when no good copy is there.

    cache_dir (Union[str, Path]): Folder for ``LAC-2.1.2.tar.gz`` (created if needed).
    index_url (str): A simple-API package index.
    opener (Optional[Opener]): ``urllib.request.urlopen`` by default (tests pass a fake).
    RETURNS (Path): The checked file.
    RAISES (SdistError): The index cannot be reached, does not list the file, or the
        download's checksum differs (the partial file is removed).
    """
    opener = opener or urllib.request.urlopen
    folder = Path(cache_dir)
    target = folder / SDIST_NAME
    if target.is_file() and sha256_of(target) == SDIST_SHA256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    url = find_sdist_url(index_url, opener)
    partial = folder / (SDIST_NAME + ".part")
    digest = hashlib.sha256()
    try:
        with opener(urllib.request.Request(url), timeout=_TIMEOUT) as response, partial.open("wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise SdistError(f"Downloading {url} failed: {err}") from err
    if digest.hexdigest() != SDIST_SHA256:
        partial.unlink(missing_ok=True)
        raise SdistError(f"{url}: SHA-256 {digest.hexdigest()} is not the expected {SDIST_SHA256}")
    # A rename, so an interrupted download never leaves a file under the final name.
    partial.replace(target)
    return target


def find_sdist_url(index_url: str, opener: Opener) -> str:
    """RETURNS (str): the URL the index gives ``LAC-2.1.2.tar.gz``, after checking its listed hash."""
    page_url = urljoin(index_url if index_url.endswith("/") else index_url + "/", PROJECT + "/")
    request = urllib.request.Request(page_url, headers={"Accept": f"{_JSON}, text/html;q=0.1"})
    try:
        with opener(request, timeout=_TIMEOUT) as response:
            body = response.read().decode("utf8")
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as err:
        raise SdistError(
            f"Could not read the package index page {page_url}: {err}. On a machine without access, "
            f"download {SDIST_NAME} elsewhere and pass its path"
        ) from err
    url, listed = _from_json(body) if body.lstrip().startswith("{") else _from_html(body)
    if url is None:
        raise SdistError(f"{page_url} does not list {SDIST_NAME}")
    if listed is not None and listed != SDIST_SHA256:
        raise SdistError(f"{page_url} lists {SDIST_NAME} with SHA-256 {listed}, not the expected {SDIST_SHA256}")
    return urljoin(page_url, url)


def _from_json(body: str) -> Tuple[Optional[str], Optional[str]]:
    try:
        files = json.loads(body).get("files", [])
    except (ValueError, AttributeError):
        return None, None
    for entry in files:
        if isinstance(entry, dict) and entry.get("filename") == SDIST_NAME:
            return entry.get("url"), (entry.get("hashes") or {}).get("sha256")
    return None, None


def _from_html(body: str) -> Tuple[Optional[str], Optional[str]]:
    for href in re.findall(r'href="([^"]+)"', body):
        link, _, fragment = href.replace("&amp;", "&").partition("#")
        if link.rsplit("/", 1)[-1] == SDIST_NAME:
            return link, fragment[len("sha256=") :] if fragment.startswith("sha256=") else None
    return None, None


CACHE_ENV = "SPACY_BILSTM_CRF_CACHE"


def default_cache_dir() -> Path:
    """RETURNS (Path): ``$SPACY_BILSTM_CRF_CACHE``, else ``~/.cache/spacy-bilstm-crf``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "spacy-bilstm-crf"


def resolve_lac_sdist(source: Union[str, Path]) -> Path:
    """The LAC sdist a config names: ``"lac"`` fetches it from the package index into
    :func:`default_cache_dir` (once; later calls find the checked copy there); anything
    else is the path of a copy (offline machines). The checksum is checked by the reader.

    RETURNS (Path): The file.
    """
    if str(source) == "lac":
        return fetch_lac_sdist(default_cache_dir())
    return Path(source)

"""Getting the CLUENER2020 data in place (the ``fetch-cluener`` command).

The project's first workflow step runs this, because ``spacy project run``
does not fetch assets by itself: a fresh clone must be able to go from nothing
to ``assets/cluener/{train,dev}.json`` without another step or flag.
"""
import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import typer
from wasabi import msg

from ._util import COMMAND, app, fail

# The official CLUENER2020 release, and the MD5s of the two files we use from it.
CLUENER_ARCHIVE_URL = "https://storage.googleapis.com/cluebenchmark/tasks/cluener_public.zip"
CLUENER_MD5: Dict[str, str] = {
    "train.json": "f85adee4fb969671db9b1f56e539573f",
    "dev.json": "ecf3cf49219eb6a5a32fe958da713f04",
}
# Lets tests (and mirrors) point the download elsewhere without changing project.yml.
URL_ENV_VAR = "SPACY_BILSTM_CRF_CLUENER_URL"
DOWNLOAD_TIMEOUT = 60  # seconds without data before urlopen gives up


class FetchError(Exception):
    """The data could not be copied or downloaded; the message says why."""


def md5sum(path: Path) -> str:
    """path (Path): A file.
    RETURNS (str): Its MD5 hex digest.
    """
    digest = hashlib.md5()
    with path.open("rb") as file_:
        for chunk in iter(lambda: file_.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_files(directory: Optional[Path]) -> List[str]:
    """directory (Optional[Path]): Where train.json and dev.json should be.
    RETURNS (List[str]): The names of the files that are not there (all if ``None``).
    """
    if directory is None:
        return list(CLUENER_MD5)
    return [name for name in CLUENER_MD5 if not (directory / name).is_file()]


def checksum_mismatches(directory: Path) -> Dict[str, str]:
    """directory (Path): A directory holding train.json and dev.json.
    RETURNS (Dict[str, str]): File name → actual MD5, for each file that is not
        the official release.
    """
    actual = {name: md5sum(directory / name) for name in CLUENER_MD5}
    return {name: md5 for name, md5 in actual.items() if md5 != CLUENER_MD5[name]}


def copy_atomic(src: Path, dest: Path) -> None:
    """Copy a file so that ``dest`` is never left half-written (an interrupted
    copy would otherwise pass for data on the next run).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def copy_from(source: Path, out_dir: Path) -> None:
    """Copy train.json and dev.json from ``source`` into ``out_dir``."""
    if source.resolve() == out_dir.resolve():
        return
    for name in CLUENER_MD5:
        copy_atomic(source / name, out_dir / name)


def warn_if_modified(directory: Path, origin: str) -> None:
    """Warn (don't fail) when a user's copy is not the official release: it may
    be modified on purpose, but then scores are not comparable to published ones.
    """
    for name, md5 in checksum_mismatches(directory).items():
        msg.warn(
            f"{name} from {origin} is not the official CLUENER2020 file "
            f"(md5 {md5}, expected {CLUENER_MD5[name]}): using it as is; scores on "
            "modified data are not comparable to published results"
        )


def download_archive(url: str, out_dir: Path) -> None:
    """Download the CLUENER2020 zip and extract train.json and dev.json into
    ``out_dir``, only if both are in the archive and match the official MD5s.

    url (str): The archive URL.
    out_dir (Path): Where the two files go.
    RAISES (FetchError): The download, the archive or a checksum failed.
    """
    import urllib.request  # only when downloading: it costs the CLI's --help 25 ms

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".download-") as tmp:
        tmp_dir = Path(tmp)
        archive = tmp_dir / "cluener_public.zip"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                with archive.open("wb") as file_:
                    shutil.copyfileobj(response, file_)
        except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
            raise FetchError(f"Downloading {url} failed: {err}") from err
        extract_splits(archive, tmp_dir)
        wrong = checksum_mismatches(tmp_dir)
        if wrong:
            details = ", ".join(
                f"{name} md5 {md5} (expected {CLUENER_MD5[name]})" for name, md5 in wrong.items()
            )
            raise FetchError(f"The archive from {url} is not the expected CLUENER2020 release: {details}")
        for name in CLUENER_MD5:
            os.replace(tmp_dir / name, out_dir / name)


def extract_splits(archive: Path, out_dir: Path) -> None:
    """Extract train.json and dev.json from a zip, wherever they sit in it.

    RAISES (FetchError): The file is not a zip, or lacks one of the two files.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {Path(info.filename).name: info for info in zf.infolist() if not info.is_dir()}
            absent = [name for name in CLUENER_MD5 if name not in members]
            if absent:
                raise FetchError(f"The archive has no {', '.join(absent)}")
            for name in CLUENER_MD5:
                with zf.open(members[name]) as src, (out_dir / name).open("wb") as dest:
                    shutil.copyfileobj(src, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # e.g. an error page, a cut-off download
        raise FetchError(f"The download is not a valid zip archive: {err}") from err


def how_to_fix(out_dir: Path, url: str) -> str:
    """RETURNS (str): What the user can do when neither copying nor downloading worked."""
    return (
        "Do one of:\n"
        f"  1. Download {url}, unzip it, and put train.json and dev.json in {out_dir}/\n"
        "  2. Point the project at your copy of the data (a directory with train.json "
        "and dev.json):\n"
        "       python -m spacy project run all . --vars.cluener_dir PATH\n"
        f"     (or run {COMMAND} fetch-cluener {out_dir} --source PATH)\n"
        "Then run the command again."
    )


@app.command("fetch-cluener")
def fetch_cluener_cli(
    # fmt: off
    out_dir: Path = typer.Argument(..., help="Where train.json and dev.json go (created if missing)", file_okay=False),
    source: Optional[Path] = typer.Option(None, "--source", "-s", help="A directory with your copy of train.json and dev.json; copied if there", file_okay=False),
    url: str = typer.Option(CLUENER_ARCHIVE_URL, "--url", help="The CLUENER2020 zip, downloaded when neither SOURCE nor OUT_DIR has the files", envvar=URL_ENV_VAR),
    # fmt: on
) -> None:
    """Put the CLUENER2020 train.json and dev.json into OUT_DIR.

    Copies them from SOURCE when both are there; otherwise keeps a copy already
    in OUT_DIR (downloaded earlier, or put there by hand); otherwise downloads
    the official archive and extracts them. Copies that differ from the
    official release (by MD5) are used with a warning; a download that differs
    is an error. When nothing works, it says exactly what to do.
    """
    source_missing = missing_files(source)
    if not source_missing:
        copy_from(source, out_dir)
        msg.good(f"Copied {', '.join(CLUENER_MD5)} from {source} to {out_dir}")
        warn_if_modified(out_dir, str(source))
        return
    if source is not None:
        msg.warn(f"No {', '.join(source_missing)} in {source}")
    if not missing_files(out_dir):
        msg.good(f"Using the CLUENER2020 files already in {out_dir}")
        warn_if_modified(out_dir, str(out_dir))
        return
    msg.info(f"Downloading {url}")
    try:
        download_archive(url, out_dir)
    except FetchError as err:
        lines = [f"No {', '.join(source_missing)} in {source}."] if source is not None else []
        lines += [f"{err}.", how_to_fix(out_dir, url)]
        fail("Could not get the CLUENER2020 data", "\n".join(lines))
    msg.good(f"Downloaded and verified {', '.join(CLUENER_MD5)} in {out_dir}")


@app.command("fetch-lac")
def fetch_lac_cli(
    # fmt: off
    out_dir: Path = typer.Argument(..., help="Where LAC-2.1.2.tar.gz goes (created if missing)", file_okay=False),
    source: Optional[Path] = typer.Option(None, "--source", "-s", help="Your copy of LAC-2.1.2.tar.gz (offline machines); copied after its checksum is checked", dir_okay=False),
    # fmt: on
) -> None:
    """Put Baidu's LAC 2.1.2 sdist (Apache-2.0, 64.8 MB) into OUT_DIR for training.

    Configs with ``lexicon_vectors`` read LAC-full's word vectors from it at
    ``initialize`` (pass the file's path, or ``"lac"`` to fetch it into a cache).
    Keeps a good copy already in OUT_DIR; otherwise copies SOURCE, or downloads the
    file from the package index. The SHA-256 is checked every time; nothing runs
    the package's setup.py. Trained pipelines store what they use and never need it.
    """
    from ..network.lac.fetch import fetch_lac_sdist
    from ..network.lac.sdist import SDIST_NAME, SdistError, check_sdist

    target = out_dir / SDIST_NAME
    try:
        if source is not None:
            check_sdist(source)
            out_dir.mkdir(parents=True, exist_ok=True)
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            msg.good(f"Copied {source} to {target}")
            return
        fetch_lac_sdist(out_dir)
    except SdistError as err:
        fail("Could not get the LAC sdist", str(err))
    msg.good(f"{target} is in place (SHA-256 checked)")

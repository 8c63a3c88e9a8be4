"""Locating and verifying the official files a dataset builder is made from.

A builder first looks for each file in a local directory (TFDS's `manual_dir`: the shared
copy in tests and CI, or a user's own download) and otherwise downloads it. Either way
the bytes are checked against a pinned digest, because a silently different file (a newer
upstream revision, a truncated download) changes the published numbers.
"""
import dataclasses
import hashlib
import pathlib
import shutil
import urllib.parse
import urllib.request
from typing import Callable

# One attempt with a short timeout: offline (many clusters) a download cannot succeed, and
# TFDS's own downloader retries 10 times with backoff (minutes) before saying so.
DOWNLOAD_TIMEOUT_S = 10.0


class DatasetFileError(RuntimeError):
  """A dataset's source file is missing, corrupt or malformed; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class SourceFile:
  """One official file of a dataset.

  Attributes:
    name: file name as it appears in the local directory (and in the official archive).
    url: where the official copy is downloaded from ("" when it comes inside an archive).
    sha256: hex digest of the expected bytes, or "" when only `git_blob_sha1` is known.
    git_blob_sha1: `git hash-object` of the expected bytes, used where upstream publishes
      no sha256 but its git history names the blob.
  """
  name: str
  url: str = ""
  sha256: str = ""
  git_blob_sha1: str = ""


def sha256_of(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def git_blob_sha1_of(path: pathlib.Path) -> str:
  """The id git gives the file's content: sha1 of `blob <size>\\0` + bytes."""
  data = pathlib.Path(path).read_bytes()
  return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify(path: pathlib.Path, source: SourceFile) -> pathlib.Path:
  """Returns `path` if its bytes are the expected ones; raises DatasetFileError otherwise."""
  path = pathlib.Path(path)
  if source.sha256:
    actual, expected, kind = sha256_of(path), source.sha256, "sha256"
  elif source.git_blob_sha1:
    actual, expected, kind = git_blob_sha1_of(path), source.git_blob_sha1, "git blob sha1"
  else:
    raise ValueError(f"SourceFile {source.name} pins no digest")
  if actual != expected:
    raise DatasetFileError(
        f"{path}: {kind} is {actual}, expected {expected}. The file is not the pinned "
        f"official version of {source.name} (a different upstream revision, an edited "
        f"copy or a broken download). Replace it with the official file"
        + (f" from {source.url}" if source.url else "") + " and rebuild.")
  return path


def find_local(directory: pathlib.Path | str | None, name: str) -> pathlib.Path | None:
  """`directory/name`, or the one file of that name below it (archives nest folders)."""
  if directory is None:
    return None
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return None
  direct = directory / name
  if direct.is_file():
    return direct
  # Official archives (MathQA.zip) may extract into a sub-folder and carry __MACOSX/ copies.
  found = sorted(p for p in directory.rglob(name)
                 if p.is_file() and "__MACOSX" not in p.parts)
  return found[0] if found else None


def fetch_once(url: str, directory: pathlib.Path | str,
               timeout_s: float | None = None) -> pathlib.Path:
  """Downloads `url` into `directory` in one attempt (no retries); returns the file's path.

  `timeout_s` (default DOWNLOAD_TIMEOUT_S) bounds the connection and each read. The file
  appears only when complete (a `.part` file is renamed), so a broken download never passes
  for a cached one.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  name = pathlib.PurePosixPath(urllib.parse.urlparse(url).path).name or "download"
  path = directory / name
  partial = path.with_name(name + ".part")
  timeout_s = DOWNLOAD_TIMEOUT_S if timeout_s is None else timeout_s
  with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as f:
    shutil.copyfileobj(response, f)
  partial.replace(path)
  return path


def download_or_fail(download: Callable[[str], object], url: str, what: str,
                     offline_advice: str) -> pathlib.Path:
  """Calls `download(url)` (a TFDS download manager method), turning failure into advice."""
  try:
    return pathlib.Path(str(download(url)))
  except Exception as e:  # noqa: BLE001 -- any network/IO failure gets the same advice.
    raise DatasetFileError(
        f"{what} is not in the local directory and downloading {url} failed "
        f"({type(e).__name__}: {e}). Either go online, or {offline_advice}.") from e

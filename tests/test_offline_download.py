"""Offline, a dataset download fails at once (one attempt, short timeout) with advice.

TFDS's own downloader retries ten times with backoff, minutes of waiting on a machine
without network; data/source_files.fetch_once makes one attempt. The servers here are local
sockets: one port with nothing listening (refused) and one that accepts and never answers.
"""
import functools
import http.server
import socket
import threading

import pytest

from data import mbpp
from data import source_files


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _SilentServer:
  """Accepts connections on 127.0.0.1, counts them, never sends a byte."""

  def __init__(self):
    self.sock = socket.socket()
    self.sock.bind(("127.0.0.1", 0))
    self.sock.listen(8)
    self.sock.settimeout(0.2)
    self.port = self.sock.getsockname()[1]
    self.connections = []
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._serve, daemon=True)
    self._thread.start()

  def _serve(self):
    while not self._stop.is_set():
      try:
        conn, _ = self.sock.accept()
      except OSError:
        continue
      self.connections.append(conn)

  def close(self):
    self._stop.set()
    self._thread.join()
    for conn in self.connections:
      conn.close()
    self.sock.close()


def _point_full_mbpp_at(monkeypatch, url: str) -> None:
  config = mbpp.Mbpp.builder_configs["full"]
  monkeypatch.setattr(config, "source", source_files.SourceFile(
      name="mbpp.jsonl", url=url, sha256=mbpp.FULL_FILE.sha256))


def test_refused_download_names_file_and_manual_dir(monkeypatch, tmp_path):
  _point_full_mbpp_at(monkeypatch, f"http://127.0.0.1:{_closed_port()}/mbpp.jsonl")
  with pytest.raises(source_files.DatasetFileError) as info:
    mbpp.load("test", data_dir=str(tmp_path), manual_dir=None)
  message = str(info.value)
  assert "mbpp.jsonl" in message and "manual_dir" in message
  assert "--config.data.manual_dir" in message and "\n" not in message


def test_unanswered_download_is_one_attempt_bounded_by_the_timeout(monkeypatch, tmp_path):
  server = _SilentServer()
  try:
    monkeypatch.setattr(source_files, "DOWNLOAD_TIMEOUT_S", 0.5)
    _point_full_mbpp_at(monkeypatch, f"http://127.0.0.1:{server.port}/mbpp.jsonl")
    with pytest.raises(source_files.DatasetFileError, match="timed out"):
      mbpp.load("test", data_dir=str(tmp_path), manual_dir=None)
    assert len(server.connections) == 1  # No retry.
  finally:
    server.close()
  assert not list(tmp_path.rglob("mbpp.jsonl"))  # Nothing half-written passes for the file.


def test_served_file_is_fetched_and_verified(shared_data_dir, monkeypatch, tmp_path):
  """The online path end to end, from a local HTTP server: fetched once, checksummed, built."""
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=str(shared_data_dir / "mbpp"))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    _point_full_mbpp_at(monkeypatch, f"http://127.0.0.1:{server.server_port}/mbpp.jsonl")
    records = mbpp.load("prompt", data_dir=str(tmp_path), manual_dir=None)
  finally:
    server.shutdown()
    server.server_close()
  assert [r["task_id"] for r in records] == list(range(1, 11))

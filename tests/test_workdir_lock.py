"""One run per workdir: a second run is refused at once, naming the holder; the lock dies with
its holder (kill -9 included); disk-full and read-only failures read as one line."""
import errno
import os
import signal
import subprocess
import sys

import pytest

from rundir import layout, workdir_lock
from tests.conftest import REPO_ROOT

_HOLDER = """
import sys
sys.path.insert(0, {root!r})
from rundir import layout
lock = layout.workdir_lock({workdir!r})
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # hold until killed
"""


@pytest.fixture
def held_workdir(tmp_path):
  """A workdir locked by another process (a run in progress); yields (workdir, process)."""
  workdir = str(tmp_path / "run")
  process = subprocess.Popen(
      [sys.executable, "-c", _HOLDER.format(root=str(REPO_ROOT), workdir=workdir)],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert process.stdout.readline().strip() == "held"
    yield workdir, process
  finally:
    process.kill()
    process.wait()


def test_second_holder_is_refused_naming_the_first_and_kill_9_releases(held_workdir):
  workdir, holder = held_workdir
  with pytest.raises(workdir_lock.WorkdirLocked) as error:
    layout.workdir_lock(workdir).acquire()
  message = str(error.value)
  assert f"pid {holder.pid} on " in message and "started 20" in message
  assert workdir in message
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with layout.workdir_lock(workdir):  # the kernel released it with the process
    assert os.path.exists(os.path.join(workdir, layout.LOCK_FILE))
  assert not os.path.exists(os.path.join(workdir, layout.LOCK_FILE))  # tidied up after use


def test_lock_is_reentrant_within_a_process(tmp_path):
  workdir = str(tmp_path / "run")
  with layout.workdir_lock(workdir):
    with layout.workdir_lock(workdir):
      pass
    # Still held after the inner release: another process is refused.
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
         f"from rundir import layout; layout.workdir_lock({workdir!r}).acquire()"],
        capture_output=True, text=True)
    assert probe.returncode != 0 and "WorkdirLocked" in probe.stderr


def test_train_refuses_a_locked_workdir_before_writing_anything(held_workdir):
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  from training.loop import train  # pylint: disable=g-import-not-at-top
  workdir, holder = held_workdir
  with pytest.raises(workdir_lock.WorkdirLocked, match=f"pid {holder.pid}"):
    train(pretrain.get_config(), workdir)
  assert sorted(os.listdir(workdir)) == [layout.LOCK_FILE]


def test_train_py_on_a_locked_workdir_exits_2_with_one_line(held_workdir):
  """As a re-submitted job meets the first one: refused at once, not a hang or a second writer."""
  workdir, holder = held_workdir
  done = subprocess.run([sys.executable, "train.py", "--config=configs/pretrain.py",
                         f"--workdir={workdir}"], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 2
  # stderr also has absl's log (the config); the error is its one last line, with no trace.
  errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
  assert errors == done.stderr.strip().splitlines()[-1:], done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  assert errors[0].startswith(f"error: {workdir} is in use by another run (pid {holder.pid} on ")
  assert sorted(os.listdir(workdir)) == [layout.LOCK_FILE]


def test_eval_and_study_refuse_a_locked_workdir(held_workdir):
  from configs import eval_synthesis  # pylint: disable=g-import-not-at-top
  from evaluation.runner import run_eval  # pylint: disable=g-import-not-at-top
  from evaluation.studies import run_study  # pylint: disable=g-import-not-at-top
  workdir, holder = held_workdir
  config = eval_synthesis.get_config()
  with pytest.raises(workdir_lock.WorkdirLocked, match=f"pid {holder.pid}"):
    run_eval(config, workdir)
  config.checkpoint = "somewhere"
  with pytest.raises(workdir_lock.WorkdirLocked, match=f"pid {holder.pid}"):
    run_study(config, workdir, "temperature")
  assert sorted(os.listdir(workdir)) == [layout.LOCK_FILE]


def test_unwritable_workdir_is_one_clear_error(tmp_path, monkeypatch):
  # As root (CI) a chmod-ed folder stays writable; fail the lock file's creation instead.
  real_open = os.open

  def read_only_open(path, flags, *args):
    if str(path).endswith(layout.LOCK_FILE):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    return real_open(path, flags, *args)
  monkeypatch.setattr(os, "open", read_only_open)
  with pytest.raises(workdir_lock.WorkdirNotWritable) as error:
    layout.workdir_lock(str(tmp_path / "run")).acquire()
  assert error.value.errno == errno.EROFS
  assert workdir_lock.storage_failure(error.value) == (
      f"cannot write to {tmp_path / 'run'} (Read-only file system); choose a writable "
      "directory")


@pytest.mark.parametrize("error, expected", [
    # What orbax's tensorstore writer raises on a full disk (seen on a 1.2 MB tmpfs).
    (ValueError('RESOURCE_EXHAUSTED: Error writing "step/0" in OCDBT database at local file '
                '"/w/checkpoints/4.orbax-checkpoint-tmp/train/": Failed writing: "/w/checkpoints'
                '/4.orbax-checkpoint-tmp/train/d/24": Failed to write 511305 bytes to file 6: '
                "No space left on device [os_error_code='28']"),
     "No space left on device writing /w/checkpoints/4.orbax-checkpoint-tmp/train/d/24; free some "
     "space or choose a writable directory, then run the same command again"),
    (RuntimeError("wrapped"), None),
    (OSError(errno.EROFS, "Read-only file system", "/w/config.json.tmp"),
     "Read-only file system writing /w/config.json.tmp; free some space or choose a writable "
     "directory, then run the same command again"),
])
def test_storage_failures_anywhere_in_the_chain_read_as_one_line(error, expected):
  try:
    try:
      raise error
    except Exception as inner:  # pylint: disable=broad-except
      raise RuntimeError("Event loop is closed") from inner
  except RuntimeError as outer:
    assert workdir_lock.storage_failure(outer) == expected

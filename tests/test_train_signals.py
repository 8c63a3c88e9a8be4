"""SIGTERM at any moment of train.py: exit status 75 (never a signal death), an honest "s from
the signal to exit" figure, and no claim of a checkpoint that does not exist."""
import ctypes
import os
import signal
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO_ROOT
from tests.test_train_loop import _config, corpus  # noqa: F401  (fixture)
from training import loop, preemption


def _catches_sigterm(pid: int) -> bool:
  with open(f"/proc/{pid}/status") as f:
    caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
  return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_sigterm_during_train_py_imports_exits_75(tmp_path):
  process = subprocess.Popen([sys.executable, "train.py", "--config=configs/pretrain.py",
                              f"--workdir={tmp_path / 'run'}"], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    # Waits for the moment train.py's first lines install the handler (its imports take
    # seconds more); bounded, for a train.py that installs none until its loop starts.
    for _ in range(20_000):
      if process.poll() is not None or _catches_sigterm(process.pid):
        break
      threading.Event().wait(0.005)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
  finally:
    process.kill()
  assert process.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
  stopped = [line for line in output.splitlines() if "stopped on SIGTERM" in line]
  assert len(stopped) == 1, output
  assert "stopped on SIGTERM during setup, before the first step: nothing new to save" \
      in stopped[0], output
  assert "s from the signal to exit" in stopped[0]
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_stop_before_any_step_says_there_is_no_checkpoint():
  message = str(preemption.Preempted(0, "SIGTERM", False, 0.0, None))
  assert "no step trained yet, so there is no checkpoint" in message
  assert "step 0) stands" not in message
  assert "latest checkpoint (step 7) stands" in str(preemption.Preempted(7, "SIGTERM", False,
                                                                         0.0, None))


def test_the_signal_is_timed_when_it_arrives_not_when_python_gets_to_its_handler(tmp_path):
  """The main thread sits in a C call (glibc's system(), which retries its wait on EINTR and
  runs no Python handler) while the signal arrives; another thread sees the arrival stamped
  and only then lets the C call end. The handler runs after that: it must report the
  stamp, not its own later time."""
  libc = ctypes.CDLL(None)
  flag = tmp_path / "go"
  seen = {}

  def signal_then_release():
    os.kill(os.getpid(), signal.SIGTERM)
    while signal.SIGTERM not in preemption._clock._arrivals:  # pylint: disable=protected-access
      threading.Event().wait(0.001)
    seen["stamped_by"] = preemption.time.monotonic()
    flag.touch()

  with preemption.StopSignals() as stop:
    sender = threading.Thread(target=signal_then_release)
    sender.start()
    libc.system(f"while [ ! -e {flag} ]; do sleep 0.01; done".encode())
    released = preemption.time.monotonic()
    sender.join()
    assert stop.requested  # the handler has run by now
  assert stop.received_at <= seen["stamped_by"] < released


def test_a_signal_during_setup_stops_before_the_compile(corpus, tmp_path, monkeypatch):  # noqa: F811
  real_prepare, compiled = loop.inputs.prepare_tokenizer, []

  def prepare_then_sigterm(*args):
    signal.raise_signal(signal.SIGTERM)  # as if it came while the tokenizer was prepared
    return real_prepare(*args)
  monkeypatch.setattr(loop.inputs, "prepare_tokenizer", prepare_then_sigterm)
  monkeypatch.setattr(loop.aot, "jit_train_step", lambda *a: compiled.append(a))
  with pytest.raises(preemption.Preempted) as stopped:
    loop.train(_config(corpus), str(tmp_path / "run"))
  assert (stopped.value.step, stopped.value.saved, compiled) == (None, False, [])
  assert str(stopped.value).startswith("stopped on SIGTERM during setup, before the first "
                                       "step: nothing new to save")

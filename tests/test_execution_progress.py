"""The one progress-line format (rundir/progress.py) and the sandbox run's progress log."""
from execution.progress import ProgressLog
from rundir.progress import format_duration, progress_line


def test_progress_line_rate_and_eta():
  now = [100.0]
  lines = []
  progress = ProgressLog(lines.append, every_s=5.0, clock=lambda: now[0])
  progress.expect(1000)
  progress.start_batch()
  now[0] = 110.0
  progress(100, 400)   # 100 programs in 10 s: 10/s, 900 left: 90 s.
  now[0] = 112.0
  progress(120, 400)   # Within 5 s of the last line: quiet.
  now[0] = 130.0
  progress(400, 400)
  progress.start_batch()
  now[0] = 140.0
  progress(100, 600)   # The count carries across batches.
  assert lines == ["executed 100/1000 programs, 10.0/s, ETA 1m30s",
                   "executed 400/1000 programs, 13.3/s, ETA 45s",
                   "executed 500/1000 programs, 12.5/s, ETA 40s"]
  assert format_duration(7384) == "2h03m"


def test_progress_line_formats_every_loop_alike():
  assert progress_line("step", 250, 2000, "", 3.125, ["loss 5.1700", "12783 tok/s"]) == (
      "step 250/2000, 3.1/s, loss 5.1700, 12783 tok/s, ETA 9m20s")
  assert progress_line("sampled", 12, 500, "problems", 0.25, ["80 samples each"]) == (
      "sampled 12/500 problems, 0.25/s, 80 samples each, ETA 32m32s")
  assert progress_line("executed", 0, 10, "programs", 0.0) == (
      "executed 0/10 programs, 0/s, ETA ?")
  assert progress_line("executed", 1200, 40000, "programs", 512.3) == (
      "executed 1200/40000 programs, 512/s, ETA 1m16s")

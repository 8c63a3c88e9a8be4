"""SLURM output: array range, runs table, dependencies, and the multi-host env, executed by
bash with stand-ins for srun and scontrol."""
import os
import shlex
import stat
import subprocess

import pytest

from sweeps import build_plan, slurm
from tests.conftest import REPO_ROOT
from tests.test_sweeps_plan import _record_configs

OBJECTIVES = "configs/sweeps/objectives.py"


@pytest.fixture
def files(tmp_path):
  plan = build_plan(OBJECTIVES, str(tmp_path / "runs"), REPO_ROOT)
  out = str(tmp_path / "slurm")
  return out, slurm.slurm_files(plan, out, "python", max_parallel=3)


def test_one_array_job_per_stage_with_its_runs_table(files):
  out, contents = files
  assert sorted(os.path.relpath(p, out) for p in contents) == sorted([
      "objectives-pretrain.runs.tsv", "objectives-pretrain.sbatch",
      "objectives-finetune.runs.tsv", "objectives-finetune.sbatch",
      "objectives-eval.runs.tsv", "objectives-eval.sbatch", "submit.sh"])
  finetune = contents[f"{out}/objectives-finetune.sbatch"]
  assert "#SBATCH --array=0-3%3\n" in finetune
  assert "#SBATCH --nodes=1\n" in finetune
  assert f"TABLE={out}/objectives-finetune.runs.tsv\n" in finetune
  table = contents[f"{out}/objectives-finetune.runs.tsv"].splitlines()
  assert table[0] == "index\tname\tworkdir\tcommand"
  assert [row.split("\t")[:2] for row in table[1:]] == [
      ["0", "config=synthesis,model=244m"], ["1", "config=synthesis,model=1b"],
      ["2", "config=execution,model=244m"], ["3", "config=execution,model=1b"]]
  assert shlex.split(table[4].split("\t")[3])[:3] == [
      "python", "train.py", "--config=configs/execution.py"]
  pretrain = contents[f"{out}/objectives-pretrain.sbatch"]
  assert "#SBATCH --array=0-1%3\n" in pretrain and "#SBATCH --nodes=2\n" in pretrain
  assert "#SBATCH --time=24:00:00\n" in pretrain
  for line in ('HOSTS=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))',
               'export JAX_COORDINATOR_ADDRESS="${HOSTS[0]}:${PORT}"',
               "export JAX_NUM_PROCESSES=2", "srun --ntasks=2 --ntasks-per-node=1 --label \\"):
    assert line + "\n" in pretrain
  assert "JAX_PROCESS_ID=$SLURM_PROCID" in pretrain
  assert "JAX_COORDINATOR_ADDRESS" not in finetune  # single-host runs need none of it


def test_submit_chains_stages_with_afterok(files):
  out, contents = files
  lines = [l for l in contents[f"{out}/submit.sh"].splitlines() if "sbatch" in l]
  assert lines == [
      f"JOB0=$(sbatch --parsable {out}/objectives-pretrain.sbatch | cut -d';' -f1)",
      f"JOB1=$(sbatch --parsable --dependency=afterok:${{JOB0}} "
      f"{out}/objectives-finetune.sbatch | cut -d';' -f1)",
      f"JOB2=$(sbatch --parsable --dependency=afterok:${{JOB1}} "
      f"{out}/objectives-eval.sbatch | cut -d';' -f1)"]


def test_finished_runs_leave_the_table_and_their_stage(tmp_path):
  runs = tmp_path / "runs"
  # Their config.json as train.py / eval.py record it at start (work without one is another
  # run's), then the work.
  _record_configs(OBJECTIVES, str(runs), {str(runs / f"objectives/pretrain/model={m}")
                                          for m in ("244m", "1b")}
                  | {str(runs / "objectives/eval/model=1b")})
  for model in ("244m", "1b"):  # pretraining done: no pretrain job, finetune has no dependency
    (runs / f"objectives/pretrain/model={model}/checkpoints/2000").mkdir(parents=True)
  (runs / "objectives/eval/model=1b/results.json").write_text("{}")
  plan = build_plan(OBJECTIVES, str(runs), REPO_ROOT)
  out = str(tmp_path / "slurm")
  contents = slurm.slurm_files(plan, out, "python")
  assert f"{out}/objectives-pretrain.sbatch" not in contents
  assert "#SBATCH --array=0-0\n" in contents[f"{out}/objectives-eval.sbatch"]
  eval_rows = contents[f"{out}/objectives-eval.runs.tsv"].splitlines()
  assert [r.split("\t")[1] for r in eval_rows[1:]] == ["model=244m"]
  submit = contents[f"{out}/submit.sh"]
  assert "JOB1=$(sbatch --parsable " + out in submit  # no dependency on a finished stage
  slurm.write_files(contents)
  with pytest.raises(FileExistsError, match="not overwriting"):
    slurm.write_files(contents)  # a queued job may still be reading its runs table


def _fake_bin(directory, name, body):
  path = directory / name
  path.write_text("#!/bin/bash\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_multi_host_task_runs_one_process_per_node_with_jax_env(tmp_path):
  plan = build_plan(OBJECTIVES, str(tmp_path / "runs"), REPO_ROOT)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  # Stand-ins: scontrol expands the node list; srun starts --ntasks copies with SLURM_PROCID;
  # "python" records the command and the jax.distributed env of each process.
  _fake_bin(bin_dir, "scontrol", 'printf "node-a\\nnode-b\\n"\n')
  _fake_bin(bin_dir, "srun", 'n=${1#--ntasks=}; shift 3\n'
            'for i in $(seq 0 $((n - 1))); do SLURM_PROCID=$i "$@"; done\n')
  _fake_bin(bin_dir, "fakepython", 'echo "proc $JAX_PROCESS_ID/$JAX_NUM_PROCESSES '
            'at $JAX_COORDINATOR_ADDRESS: $*"\n')
  out = str(tmp_path / "slurm")
  contents = slurm.slurm_files(plan, out, str(bin_dir / "fakepython"))
  slurm.write_files(contents)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID="1",
             SLURM_JOB_ID="777", SLURM_JOB_NODELIST="node-[a-b]")
  subprocess.run(["bash", f"{out}/objectives-pretrain.sbatch"], env=env, check=True,
                 cwd=tmp_path)
  log = (tmp_path / "runs/objectives/pretrain/model=1b/launch.log").read_text().splitlines()
  assert log[0].endswith("slurm job 777 task 1 (model=1b): " + " ".join(
      [str(bin_dir / "fakepython"), "train.py", "--config=configs/pretrain.py",
       f"--workdir={tmp_path}/runs/objectives/pretrain/model=1b", "--distributed",
       "--config.mesh.fsdp=-1", "--config.mesh.data=1", "--config.model=1b"]))
  args = log[0].split(": ", 1)[1].split(" ", 1)[1]
  assert log[1:] == [f"proc 0/2 at node-a:20777: {args}", f"proc 1/2 at node-a:20777: {args}"]
  assert not (tmp_path / "runs/objectives/pretrain/model=244m").exists()

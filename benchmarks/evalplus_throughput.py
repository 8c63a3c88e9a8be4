"""Samples/s scoring HumanEval+ as EvalPlus does: ours versus evalplus's own evaluator, one run.

    python benchmarks/evalplus_throughput.py [--peer-python PYTHON] \
        [--samples 10] [--slow-every 16] [--workers 0]

Workload: every one of HumanEval+'s 164 problems (v0.1.10, from --data-dir/evalplus) with
--samples whole-program samples (EvalPlus `samples.jsonl`, `solution` lines) built from its
own canonical solution (data/evalplus_variants.py), their kinds in turn from --cycle (by
default the reference, a wrong one, one that changes its output's types, one that nudges its
float outputs, and again; each right one costs both harnesses the reference's own run time
on every input, which no scorer can skip); in every
--slow-every-th problem the last sample is one that loops forever (it costs each harness the
first input's time limit, 1 s, per input group, and cannot go faster anywhere).

`--cycle wrong --slow-every 0` (every sample fails on its first input) times the scorers
themselves: what is left when the samples' own computing is taken out.

Both sides start cold, as a first evaluation does: evalplus computes its ground truth afresh
(its cache under a fresh XDG_CACHE_HOME), ours its reference outputs (a fresh workdir), and
both score base and base + plus for every sample. Ours: evaluation.evaluate_samples_file with
configs/eval_humaneval_plus.py's sandbox (one worker per core unless --workers), timed from
loading the problems to results.json. The peer: evalplus.evaluate.evaluate(parallel=P,
i_just_wanna_run=True), run where benchmarks/evalplus_peer.py finds evalplus (--peer-python or
$EVALPLUS_PYTHON, else .evalplus/ from requirements-evalplus.txt: evalplus pins protobuf 5, so
it stays out of the project's environment; without any, ours alone), P = our worker count
unless --peer-parallel, timed inside that process around evaluate(), so its imports are not
counted. The two alternate for --rounds rounds and each keeps its best.

Prints one JSON line: samples/s for both, `ratio` = ours / peer, the load average before and
after (other jobs on a shared machine slow both), `verdict_disagreements`: samples whose
base or base + plus verdict differs between the two (0 when the scorers agree), and the CPU
seconds each used in the same round (the peer's include its imports; ours the sandbox's
workers and programs), whose ratio `cpu_ratio` other jobs on the machine change less.

What no scorer can skip, from the same run: `floor_cpu_s`, the programs' own computing under
EvalPlus's rules, at least: each reference once on all its inputs (the expected outputs), each
sample that passes base + plus again (it ran every input; the samples here compute what their
reference does, timed by ours in this run), each looping sample its first time limit (1 s).
`floor_s` = that over the workers, a lower bound on any scorer's time with them;
`best_possible_ratio` = peer / floor; `ratio_above_floor` = the two scorers' times above the
floor, compared: what each spends on scoring itself (processes, harness, comparisons, writes).
"""
import argparse
import collections
import gzip
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.evalplus_peer import evalplus_runner  # noqa: E402
from configs import eval_humaneval_plus  # noqa: E402
from data import evalplus, evalplus_harness, evalplus_variants, tasks  # noqa: E402
from evaluation import evalplus_references, load_scored  # noqa: E402
from evaluation.evaluate import evaluate_samples_file  # noqa: E402
from execution import SandboxConfig  # noqa: E402

CYCLE = "reference,wrong,type_changing,nudged"
# Inside the peer's interpreter: time evaluate() alone; os._exit skips its watchdog thread's
# 20 s sleep.
_PEER = ("import json, os, sys, time; from evalplus.evaluate import evaluate; "
         "start = time.perf_counter(); "
         "evaluate('humaneval', samples=sys.argv[1], parallel=int(sys.argv[2]), "
         "i_just_wanna_run=True); "
         "print('PEER_SECONDS', time.perf_counter() - start, flush=True); os._exit(0)")


def _kinds(problem_index: int, samples: int, slow_every: int, cycle: list[str]) -> list[str]:
  kinds = [cycle[i % len(cycle)] for i in range(samples)]
  if slow_every and problem_index % slow_every == 0:
    kinds[-1] = "slow"
  return kinds


def _samples(problems, samples: int, slow_every: int, cycle: list[str]) -> list[dict]:
  # Each sample's text is its own (a numbered comment), as sampled programs mostly are, so
  # that no scorer runs fewer programs by running identical ones once.
  return [{"task_id": p["task_id"],
           "solution": evalplus_variants.variant(p["entry_point"],
                                                 p["prompt"] + p["canonical_solution"], kind)
                       + f"\n# sample {j}\n",
           "kind": kind}
          for i, p in enumerate(problems)
          for j, kind in enumerate(_kinds(i, samples, slow_every, cycle))]


def _sandbox(workers: int) -> SandboxConfig:
  sandbox = eval_humaneval_plus.get_config().sandbox
  return SandboxConfig(timeout_s=sandbox.timeout_s, memory_mb=sandbox.memory_mb,
                       workers=workers, run_as_main=sandbox.run_as_main,
                       screen_batch=sandbox.screen_batch)


def _cpu_seconds(who: int) -> float:
  usage = resource.getrusage(who)
  return usage.ru_utime + usage.ru_stime


def _run_ours(samples_path: pathlib.Path, manual_dir: str, workdir: pathlib.Path,
              sandbox: SandboxConfig):
  start = time.perf_counter()
  cpu_start = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
  examples = tasks.load_task_examples("humaneval_plus", "test", manual_dir=manual_dir)
  evaluate_samples_file(str(samples_path), examples, str(workdir), sandbox_config=sandbox,
                        ks=(1,), samples_format="evalplus")
  seconds = time.perf_counter() - start
  # The sandbox's workers, closed by now, and the programs they ran count as children.
  cpu = (_cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
         - cpu_start)
  verdicts = {f"HumanEval/{rs[0]['task_id']}": [(r["passed"], r["challenge_passed"])
                                                 for r in rs]
              for rs in load_scored(str(workdir)).values()}
  # The reference outputs this run computed, with their times, from its workdir's cache.
  references = evalplus_references.with_reference_outputs(examples, workdir=str(workdir))
  reference_s = {f"HumanEval/{e['task_id']}": evalplus_references.reference_seconds(e)
                 for e in references}
  return verdicts, seconds, cpu, reference_s


def _floor_cpu_s(samples: list[dict], verdicts: dict, reference_s: dict) -> float:
  """The module docstring's floor_cpu_s: the programs' own computing that no scorer skips."""
  floor = sum(reference_s.values())
  index = collections.Counter()
  for sample in samples:
    task_id = sample["task_id"]
    i, index[task_id] = index[task_id], index[task_id] + 1
    if verdicts.get(task_id, [])[i:i + 1] == [(True, True)]:
      floor += reference_s.get(task_id, 0.0)
    elif sample["kind"] == "slow":
      floor += evalplus_harness.MIN_TIME_LIMIT_S
  return floor


def _run_peer(runner: tuple[str, dict[str, str]], samples_path: pathlib.Path,
              problems_path: pathlib.Path, parallel: int, cache: pathlib.Path):
  python, python_env = runner
  env = {**os.environ, **python_env, "HUMANEVAL_OVERRIDE_PATH": str(problems_path),
         "XDG_CACHE_HOME": str(cache)}
  cpu_start = _cpu_seconds(resource.RUSAGE_CHILDREN)
  done = subprocess.run([python, "-c", _PEER, str(samples_path), str(parallel)], env=env,
                        capture_output=True, text=True, check=False, timeout=3600)
  # Its imports included; its pool's workers and their processes are reaped inside it.
  cpu = _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_start
  seconds = [line.split()[1] for line in done.stdout.splitlines()
             if line.startswith("PEER_SECONDS ")]
  if done.returncode or not seconds:
    raise SystemExit(f"the peer failed (exit {done.returncode}): {done.stderr[-2000:]}")
  with open(samples_path.with_name(samples_path.stem + "_eval_results.json")) as f:
    results = json.load(f)["eval"]
  verdicts = {task_id: [(r["base_status"] == "pass",
                         r["base_status"] == r["plus_status"] == "pass") for r in records]
              for task_id, records in results.items()}
  return verdicts, float(seconds[0]), cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
  parser.add_argument("--samples", type=int, default=10, help="samples per problem")
  parser.add_argument("--cycle", default=CYCLE,
                      help="the kinds of sample (data/evalplus_variants.py) each problem's "
                           "samples take in turn")
  parser.add_argument("--slow-every", type=int, default=16,
                      help="one looping sample in every N-th problem (0: none)")
  parser.add_argument("--workers", type=int, default=0, help="ours: 0 = one per core")
  parser.add_argument("--peer-python", default="",
                      help="a Python with evalplus 0.3.1; default $EVALPLUS_PYTHON, else this "
                           "one with .evalplus/ (requirements-evalplus.txt), else ours alone")
  parser.add_argument("--peer-parallel", type=int, default=0,
                      help="evalplus's parallel=; 0 = as many as our workers")
  parser.add_argument("--rounds", type=int, default=1)
  args = parser.parse_args()
  if args.samples < 1 or args.rounds < 1 or args.slow_every < 0:
    parser.error("--samples and --rounds must be >= 1, --slow-every >= 0")
  cycle = args.cycle.split(",")
  unknown = sorted(set(cycle) - set(evalplus_variants.KINDS))
  if unknown:
    parser.error(f"--cycle: unknown kinds {unknown}; known: {list(evalplus_variants.KINDS)}")
  manual_dir = os.path.join(args.data_dir, "evalplus")
  try:
    problems = evalplus.load("humaneval_plus", manual_dir=manual_dir)
  except Exception as e:  # pylint: disable=broad-except  (missing or wrong data file)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  samples = _samples(problems, args.samples, args.slow_every, cycle)
  sandbox = _sandbox(args.workers)
  parallel = args.peer_parallel or sandbox.worker_count
  peer = evalplus_runner(args.peer_python)
  load_before = os.getloadavg()
  ours_rounds, peer_rounds = [], []
  with tempfile.TemporaryDirectory(prefix="evalplus-bench-") as tmp:
    tmp = pathlib.Path(tmp)
    problems_path = tmp / "HumanEvalPlus.jsonl"
    with gzip.open(evalplus.source_path(evalplus.HUMANEVAL_PLUS, manual_dir=manual_dir)) as f:
      problems_path.write_bytes(f.read())
    for round_index in range(args.rounds):
      run_dir = tmp / f"round{round_index}"
      run_dir.mkdir()
      samples_path = run_dir / "samples.jsonl"
      samples_path.write_text("".join(
          json.dumps({"task_id": s["task_id"], "solution": s["solution"]}) + "\n"
          for s in samples))
      if peer:
        peer_rounds.append(_run_peer(peer, samples_path, problems_path, parallel,
                                     run_dir / "cache"))
      ours_rounds.append(_run_ours(samples_path, manual_dir, run_dir / "ours", sandbox))
      shutil.rmtree(run_dir)
  load_after = os.getloadavg()
  n = len(samples)
  ours_verdicts, ours_s, ours_cpu, reference_s = min(ours_rounds, key=lambda r: r[1])
  floor_cpu = _floor_cpu_s(samples, ours_verdicts, reference_s)
  floor_s = floor_cpu / sandbox.worker_count
  result = {
      "benchmark": "evalplus_throughput", "dataset": "HumanEval+ v0.1.10",
      "problems": len(problems), "samples_per_problem": args.samples, "samples": n,
      "cycle": args.cycle, "slow_every": args.slow_every,
      "kinds": {k: sum(s["kind"] == k for s in samples) for k in evalplus_variants.KINDS},
      "rounds": args.rounds, "cpus": os.cpu_count(), "ours_workers": sandbox.worker_count,
      "ours_samples_per_s": round(n / ours_s, 2), "ours_wall_s": round(ours_s, 1),
      "ours_cpu_s": round(ours_cpu, 1),
      "floor_cpu_s": round(floor_cpu, 1), "floor_s": round(floor_s, 1),
      "ours_passed": {"base": sum(v[0] for vs in ours_verdicts.values() for v in vs),
                      "base_plus": sum(v[1] for vs in ours_verdicts.values() for v in vs)},
  }
  if peer_rounds:
    peer_verdicts, peer_s, peer_cpu = min(peer_rounds, key=lambda r: r[1])
    kinds = {}
    for sample in samples:
      kinds.setdefault(sample["task_id"], []).append(sample["kind"])
    # (base, base + plus) per sample; a near time limit can flip either on a loaded machine.
    disagreements = [
        {"task_id": task_id, "sample": i, "kind": kinds[task_id][i], "peer": list(theirs),
         "ours": list(ours[i]) if i < len(ours) else None}
        for task_id, vs in peer_verdicts.items()
        for ours in [ours_verdicts.get(task_id, [])]
        for i, theirs in enumerate(vs) if i >= len(ours) or tuple(ours[i]) != theirs]
    result.update({
        "peer": "evalplus 0.3.1 evaluate(), ground truth included",
        "peer_parallel": parallel,
        "peer_samples_per_s": round(n / peer_s, 2), "peer_wall_s": round(peer_s, 1),
        "ratio": round(peer_s / ours_s, 2),
        "best_possible_ratio": round(peer_s / floor_s, 2),
        "ratio_above_floor": round((peer_s - floor_s) / max(ours_s - floor_s, 1e-9), 2),
        "peer_cpu_s": round(peer_cpu, 1), "cpu_ratio": round(peer_cpu / ours_cpu, 2),
        "verdict_disagreements": len(disagreements), "disagreements": disagreements[:10],
        # All of them by which side passed what: "kind peer=[base, plus] ours=[base, plus]".
        "disagreement_counts": dict(collections.Counter(
            f"{d['kind']} peer={d['peer']} ours={d['ours']}" for d in disagreements)),
        "all_rounds_wall_s": {"peer": [round(r[1], 1) for r in peer_rounds],
                              "ours": [round(r[1], 1) for r in ours_rounds]},
    })
  result["loadavg_1m_before_after"] = [round(load_before[0], 2), round(load_after[0], 2)]
  print(json.dumps(result))


if __name__ == "__main__":
  main()

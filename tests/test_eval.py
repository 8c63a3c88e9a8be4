"""eval.py's runner: samples files, a tiny model end to end, resume, and bad input."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import eval_execution, eval_synthesis
from data import prompt_fit
from data.prompts import cut_at_done
from evaluation import runner
from evaluation.runner import load_examples, run_eval
from evaluation.throughput_ledger import ThroughputLedger
from model import checkpoint_manifest, run_dir, run_identity
from model.decoder import abstract_model, forward
from tests.test_train_loop import _config, corpus  # noqa: F401  (module fixture)
from training.loop import train


def _eval_config(module, mbpp_dirs, **overrides):
  config = module.get_config()
  config.data.manual_dir = mbpp_dirs["manual_dir"]
  config.data.data_dir = mbpp_dirs["data_dir"]
  config.update(overrides)
  return config


def test_samples_path_scores_reference_solutions(mbpp_dirs, shared_data_dir, tmp_path):
  samples = tmp_path / "samples.in.jsonl"
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl") as f, open(samples, "w") as out:
    for line in f:
      problem = json.loads(line)
      if 11 <= problem["task_id"] <= 15:
        out.write(json.dumps({"task_id": problem["task_id"], "completion": problem["code"]}))
        out.write("\n")
        out.write(json.dumps({"task_id": problem["task_id"], "completion": "return"}) + "\n")
  results = run_eval(_eval_config(eval_synthesis, mbpp_dirs, samples_path=str(samples),
                                  max_problems=5), str(tmp_path / "ev"))
  assert results["pass_at_k"] == {"1": 0.5}
  assert [(p["task_id"], p["n"], p["c"]) for p in results["per_problem"]] == [
      (t, 2, 1) for t in range(11, 16)]


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):  # noqa: F811
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  train(_config(corpus, num_train_steps=2, checkpoint_every=2, eval_every=0), workdir)
  return workdir


@pytest.mark.slow
def test_tiny_model_end_to_end_and_resume(tiny_run, mbpp_dirs, tmp_path):
  workdir = str(tmp_path / "ev")
  config = _eval_config(eval_synthesis, mbpp_dirs, checkpoint=tiny_run, max_problems=3,
                        num_samples=2, slots_per_call=8, max_prompt_len=512)
  config.sampling.max_new_tokens = 12
  config.mesh.data = 8
  results = run_eval(config, workdir)
  assert [(p["task_id"], p["n"]) for p in results["per_problem"]] == [(11, 2), (12, 2), (13, 2)]
  # This tokenizer's 3-shot prompts take 1,327-1,713 tokens, their queries alone 226, 380 and
  # 612: two lose all their shots to fit 512, and task 13 is not sampled (prompt_too_long).
  assert results["prompt_fit"] == {"shots_dropped": {"mbpp/11": 3, "mbpp/12": 3},
                                   "prompt_too_long": ["mbpp/13"]}
  assert results["status_counts"]["prompt_too_long"] == 2
  assert set(results["pass_at_k"]) == {"1"}
  with open(os.path.join(workdir, "samples.jsonl")) as f:
    first = f.read()
  assert len(first.splitlines()) == 6
  # The run's speed by phase: every generated token and distinct program counted.
  records = [json.loads(line) for line in first.splitlines()]
  throughput = results["meta"]["throughput"]
  assert 6 <= throughput["tokens_generated"] <= 6 * 12 and throughput["tokens_per_s"] > 0
  # Distinct programs, each against its tests and, where a problem has them, its challenge
  # tests (a second job).
  distinct = len({r["program"] for r in records})
  assert distinct <= throughput["programs_executed"] <= 2 * distinct
  # Resume: a second run with more problems keeps the finished ones and samples the rest;
  # the samples of the first three problems are exactly those of an uninterrupted run.
  config.max_problems = 5
  resumed = run_eval(config, workdir)
  # results count the whole eval, not the last launch's part: the first launch's fitted
  # prompts are still listed, and the tokens of both launches add up.
  assert resumed["prompt_fit"]["shots_dropped"].items() >= {"mbpp/11": 3, "mbpp/12": 3}.items()
  assert "mbpp/13" in resumed["prompt_fit"]["prompt_too_long"]
  total = resumed["meta"]["throughput"]
  assert total["launches"] == 2 and total["launches_cut_short"] == 0
  assert total["tokens_generated"] > throughput["tokens_generated"]
  assert total["programs_executed"] > throughput["programs_executed"]
  fresh = str(tmp_path / "fresh")
  run_eval(config, fresh)
  load = lambda d: sorted((r["id"], r["sample_index"], r["completion"]) for r in map(
      json.loads, open(os.path.join(d, "samples.jsonl"))))
  assert load(workdir) == load(fresh)
  assert len(load(workdir)) == 10


@pytest.mark.slow
def test_execution_prediction_is_greedy_and_scored(tiny_run, mbpp_dirs, tmp_path):
  config = _eval_config(eval_execution, mbpp_dirs, checkpoint=tiny_run, max_problems=4,
                        slots_per_call=8, max_prompt_len=512)
  config.sampling.max_new_tokens = 8
  config.mesh.data = 8
  results = run_eval(config, str(tmp_path / "ev"))
  assert all(p["n"] == 1 for p in results["per_problem"]) and len(results["per_problem"]) == 4
  # Greedy: each completion is the argmax continuation of a plain full forward pass (no cache,
  # one device), computed here independently. Where two logits come within 1e-3 of each other
  # the two computations may break the tie differently, so that problem's check stops there.
  cfg = run_dir.load_model_config(tiny_run)
  graphdef, shapes, _ = abstract_model(cfg)
  params = run_dir.load_params(tiny_run, shapes)
  tokenizer = run_dir.load_tokenizer(run_dir.tokenizer_path(tiny_run))
  records = [json.loads(line) for line in open(tmp_path / "ev" / "samples.jsonl")]
  examples = {e["id"]: e for e in load_examples(config)}
  # One fixed, right-padded length: causal attention makes position i's logits independent of
  # what follows it, and one shape compiles once (a growing length compiled 32 times).
  length = config.max_prompt_len + config.sampling.max_new_tokens
  full_forward = jax.jit(lambda p, tokens_1xL: forward(graphdef, p, tokens_1xL))
  checked = 0
  for record in records:
    # The prompt the eval fitted into max_prompt_len (whole shots dropped, never cut).
    fitted = prompt_fit.fit_example(examples[record["id"]],
                                    lambda text: len(tokenizer.encode_prompt(text)),
                                    config.max_prompt_len, "drop_shots")
    tokens = tokenizer.encode_prompt(fitted["prompt"])
    generated, tied = [], False
    for _ in range(config.sampling.max_new_tokens):
      context = tokens + generated
      padded = np.zeros((1, length), np.int32)
      padded[0, :len(context)] = context
      logits = np.asarray(full_forward(params, jnp.asarray(padded)))[0, len(context) - 1]
      top_two = np.sort(logits)[-2:]
      if top_two[1] - top_two[0] < 1e-3:
        tied = True
        break
      generated.append(int(np.argmax(logits)))
      if generated[-1] == tokenizer.eos_id:
        break
    if tied:
      continue
    text = tokenizer.decode([t for t in generated if t != tokenizer.eos_id])
    assert record["completion"] == cut_at_done(text), record["id"]
    checked += 1
  assert checked >= 2


def test_bad_inputs_fail_before_any_work(tiny_run, mbpp_dirs, tmp_path):
  with pytest.raises(ValueError, match="checkpoint"):
    run_eval(_eval_config(eval_synthesis, mbpp_dirs), str(tmp_path / "a"))
  from data.tokenizer import train_tokenizer  # pylint: disable=g-import-not-at-top
  other = train_tokenizer((f"x{i} = {i}\n" * 20 for i in range(50)), str(tmp_path / "tok"),
                          vocab_size=276)
  with pytest.raises(ValueError, match="do not belong together"):
    run_eval(_eval_config(eval_synthesis, mbpp_dirs, checkpoint=tiny_run,
                          tokenizer_path=other.model_path), str(tmp_path / "b"))
  with pytest.raises(Exception, match="does not exist"):
    run_eval(_eval_config(eval_synthesis, mbpp_dirs, checkpoint=str(tmp_path / "none")),
             str(tmp_path / "c"))


@pytest.mark.slow
def test_studies_run_on_a_real_model(tiny_run, mbpp_dirs, tmp_path):
  """The studies' model path: one checkpoint load, a new sampler per temperature, repair
  rounds whose dialogs reach the model (a tiny model solves nothing, so every problem goes
  on to round 1)."""
  from evaluation import repair, studies  # pylint: disable=g-import-not-at-top
  config = _eval_config(eval_synthesis, mbpp_dirs, checkpoint=tiny_run, max_problems=2,
                        num_samples=2, slots_per_call=8, max_prompt_len=512)
  config.sampling.max_new_tokens = 8
  config.mesh.data = 8
  summary = studies.run_study(config, str(tmp_path / "temp"), "temperature", values="0.0,1.0")
  greedy = [json.loads(line)["completion"]
            for line in open(tmp_path / "temp" / "temperature=0.0" / "samples.jsonl")]
  assert len(greedy) == 4 and greedy[0] == greedy[1] and greedy[2] == greedy[3]
  assert [r["samples_per_problem"] for r in summary["rows"]] == [2, 2]
  summary = studies.run_study(config, str(tmp_path / "repair"), "repair", rounds=1)
  assert [(r["feedback"]["attempted"], r["control"]["attempted"])
          for r in summary["rounds"]] == [(2, 2), (2, 2)]
  with open(tmp_path / "repair" / "round_1" / repair.DIALOGS_FILE) as f:
    assert all("\nFeedback: " in json.loads(line)["prompt"] for line in f)
  with open(tmp_path / "repair" / "round_1" / "results.json") as f:
    assert json.load(f)["meta"]["repair_round"] == 1


def _fake_run(path, steps):
  """A run directory as far as the identity looks: step folders and a tokenizer file."""
  for step in steps:
    os.makedirs(path / "checkpoints" / str(step) / "params")
    checkpoint_manifest.write(str(path / "checkpoints" / str(step)))
  (path / "tokenizer.model").write_bytes(b"a tokenizer")


def _first_launch(mbpp_dirs, run, workdir):
  """What a first eval launch of `run` leaves in `workdir`: its record, then a scored sample."""
  first = _eval_config(eval_synthesis, mbpp_dirs, checkpoint=str(run), max_problems=2)
  runner._record_config(first, workdir, runner._check_identity(first, workdir))
  with open(os.path.join(workdir, run_dir.SAMPLES_FILE), "w") as f:
    f.write(json.dumps({"id": "mbpp/11", "sample_index": 0}) + "\n")


def test_a_resumed_eval_of_another_model_or_sampling_is_refused(mbpp_dirs, tmp_path):
  """16 problems from one model and 8 from another in one results.json: refused, in one line,
  before anything is loaded; resume_mismatch=allow goes on on purpose."""
  run, workdir = tmp_path / "run", str(tmp_path / "ev")
  _fake_run(run, [2])
  _first_launch(mbpp_dirs, run, workdir)
  config_before = open(os.path.join(workdir, run_dir.CONFIG_FILE)).read()
  os.makedirs(run / "checkpoints" / "4" / "params")  # the run trained on: another model
  second = _eval_config(eval_synthesis, mbpp_dirs, checkpoint=str(run), max_problems=2, seed=1)
  second.sampling.temperature = 0.8
  with pytest.raises(run_dir.IdentityMismatch) as error:
    run_eval(second, workdir)
  message = str(error.value)
  for change in ("checkpoint.step: recorded 2, now 4", "seed: recorded 0, now 1",
                 "sampling.temperature: recorded 0.5, now 0.8", "resume_mismatch=allow"):
    assert change in message
  assert "\n" not in message
  assert open(os.path.join(workdir, run_dir.CONFIG_FILE)).read() == config_before
  # Allowed: past the check (to loading the fake checkpoint); nothing recorded before it loads.
  second.resume_mismatch = "allow"
  with pytest.raises(run_dir.CheckpointError, match="has no model_config"):
    run_eval(second, workdir)
  assert [line["event"] for line in run_identity.history(workdir)] == ["start"]


def test_a_resumed_eval_may_change_what_changes_no_sample(mbpp_dirs, tmp_path):
  """The same checkpoint copied elsewhere, more problems, other workers, slots and mesh."""
  run, workdir = tmp_path / "run", str(tmp_path / "ev")
  _fake_run(run, [2])
  _first_launch(mbpp_dirs, run, workdir)
  shutil.copytree(run, tmp_path / "moved")
  later = _eval_config(eval_synthesis, mbpp_dirs, checkpoint=str(tmp_path / "moved"),
                       max_problems=4, slots_per_call=16, pass_at_k=(1,))
  later.sandbox.workers = 3
  later.mesh.data = 2
  with pytest.raises(run_dir.CheckpointError, match="has no model_config"):
    run_eval(later, workdir)  # past the identity check


def test_throughput_sums_every_launch_of_an_eval(tmp_path):
  """A launch killed after a chunk still counts, and the next launch adds its own part."""
  counts = dict(wall_s=10.0, sampling_s=6.0, tokens_generated=100, execution_s=4.0,
                programs_executed=20, programs_screened=5)
  killed = ThroughputLedger(str(tmp_path), continuing=False)
  killed.update(False, **counts)  # its last chunk; then it died
  resumed = ThroughputLedger(str(tmp_path), continuing=True)
  resumed.update(True, **{k: v * 2 for k, v in counts.items()})
  total = resumed.combined()
  assert total == {"wall_s": 30.0, "sampling_s": 18.0, "tokens_generated": 300,
                   "tokens_per_s": 16.7, "execution_s": 12.0, "programs_executed": 60,
                   "programs_screened": 15, "programs_per_s": 5.0, "launches": 2,
                   "launches_cut_short": 1}
  # A fresh eval in the same workdir (nothing scored there) starts its own count.
  assert ThroughputLedger(str(tmp_path), continuing=False).combined()["launches"] == 0


@pytest.mark.parametrize("sealed", [True, False])
def test_a_damaged_checkpoint_is_one_clear_error_for_eval(tiny_run, tmp_path, sealed):
  """eval.py (and init_from) load the parameters alone: a flipped bit is caught by the step's
  checksums, damage in a step without them by decoding; either way one line naming the step
  and the file, never orbax's traceback or silently other numbers."""
  run = str(tmp_path / "run")
  shutil.copytree(tiny_run, run)
  step_dir = os.path.join(run_dir.checkpoints_dir(run), "2")
  params_dir = os.path.join(step_dir, "params")
  files = [os.path.join(d, f) for d, _, names in os.walk(params_dir) for f in names]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    if sealed:  # one bit of the last byte
      f.seek(os.path.getsize(biggest) - 1)
      byte = f.read(1)[0]
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte ^ 0x01]))
    else:
      f.write(b"\0" * os.path.getsize(biggest))
  if not sealed:
    os.remove(os.path.join(step_dir, run_dir.MANIFEST_FILE))
  _, shapes, _ = abstract_model(run_dir.load_model_config(run))
  with pytest.raises(run_dir.CheckpointError) as error:
    run_dir.load_params(run, shapes)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"checkpoint step 2 in {os.path.dirname(step_dir)} is damaged")
  assert ("sha256 differs" in message) if sealed else ("params" in message)
  assert f"rename {step_dir} to 2.corrupt" in message

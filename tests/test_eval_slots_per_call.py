"""An eval's slots per call is `slots_per_call`; `batch_size`, its old name (a training
config's global batch), is still read, with a warning, and never disagrees with it."""
import logging

from configs import eval_synthesis
from launch.validate import eval_problem
from evaluation import identity, runner
from tests.scripted_sampler import ScriptedSampler


def test_slots_per_call_sets_the_samplers_slots(caplog):
  config = eval_synthesis.get_config()
  config.slots_per_call = 3
  with caplog.at_level(logging.WARNING):
    sampler = runner.sampler_for(config, ScriptedSampler(lambda p, s: ""), [])
  assert sampler.slots_per_call == 3
  assert "deprecated" not in caplog.text


def test_the_old_name_maps_to_slots_per_call_with_a_warning(caplog):
  config = eval_synthesis.get_config()
  config.batch_size = 5
  assert eval_problem(config) is None
  with caplog.at_level(logging.WARNING):
    sampler = runner.sampler_for(config, ScriptedSampler(lambda p, s: ""), [])
  assert sampler.slots_per_call == 5
  assert "batch_size is deprecated: it is slots_per_call now" in caplog.text


def test_both_names_set_to_different_values_is_a_user_error():
  config = eval_synthesis.get_config()
  config.batch_size, config.slots_per_call = 5, 4
  assert "disagree; set slots_per_call alone" in eval_problem(config)
  config.slots_per_call = 5
  assert eval_problem(config) is None


def test_neither_name_is_part_of_an_evals_identity():
  config = eval_synthesis.get_config()
  config.samples_path = __file__  # no checkpoint to fingerprint
  first = identity.eval_identity(config)
  config.slots_per_call, config.batch_size = 16, 16
  assert identity.eval_identity(config) == first

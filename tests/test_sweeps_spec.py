"""sweeps/spec.py and naming.py: product / zip semantics and run names."""
import pytest

from sweeps import Sweep, SweepError
from sweeps import naming


def test_product_first_key_varies_slowest():
  sweep = Sweep("train.py", "configs/synthesis.py").product(model=["a", "b"], seed=[0, 1, 2])
  assert sweep.assignments() == [
      {"model": "a", "seed": 0}, {"model": "a", "seed": 1}, {"model": "a", "seed": 2},
      {"model": "b", "seed": 0}, {"model": "b", "seed": 1}, {"model": "b", "seed": 2}]


def test_zip_walks_lists_together_and_groups_combine_as_product():
  sweep = Sweep("train.py", "c.py")
  sweep.product({"optimizer.learning_rate": [1e-4, 3e-4]})
  sweep.zip(seed=[0, 1], **{"data.shuffle_seed": [10, 11]})
  assert sweep.assignments() == [
      {"optimizer.learning_rate": 1e-4, "seed": 0, "data.shuffle_seed": 10},
      {"optimizer.learning_rate": 1e-4, "seed": 1, "data.shuffle_seed": 11},
      {"optimizer.learning_rate": 3e-4, "seed": 0, "data.shuffle_seed": 10},
      {"optimizer.learning_rate": 3e-4, "seed": 1, "data.shuffle_seed": 11}]
  assert sweep.axis_keys == ["optimizer.learning_rate", "seed", "data.shuffle_seed"]


def test_no_axes_is_one_run():
  assert Sweep("train.py", "c.py", base={"seed": 3}).assignments() == [{}]


@pytest.mark.parametrize("build, message", [
    (lambda s: s.zip(seed=[0, 1], model=["a"]), "one length"),
    (lambda s: s.product(seed=[0]).zip(seed=[1]), "'seed' is set twice"),
    (lambda s: s.product(num_train_steps=[1, 2]), "'num_train_steps' is set twice"),
    (lambda s: s.product(model="1b"), "needs a list"),
    (lambda s: s.product(model=[]), "has no values"),
    (lambda s: s.product(), "at least one axis"),
])
def test_malformed_axes_are_refused(build, message):
  sweep = Sweep("train.py", "c.py", base={"num_train_steps": 5}, name="s")
  with pytest.raises(SweepError, match=message):
    build(sweep)


def test_kind_follows_the_script():
  assert Sweep("eval.py", "c.py").kind == "eval"
  assert Sweep("train.py", "c.py").kind == "train"
  assert Sweep("my/fake.py", "c.py", kind="eval").kind == "eval"


@pytest.mark.parametrize("value, text", [
    (3e-4, "0.0003"), (1e-05, "1e-5"), (2.5e10, "25000000000.0"), (True, "true"),
    (7, "7"), ("1b", "1b"), (-1, "-1")])
def test_format_value(value, text):
  assert naming.format_value(value) == text
  if isinstance(value, float):
    assert float(text) == value  # names and command lines keep the exact value


def test_names_are_short_readable_and_safe():
  names = naming.short_names(["optimizer.learning_rate", "seed", "data.seed", "x.y"],
                             {"x.y": "why"})
  # lr is the default alias; two keys ending in "seed" keep their full keys.
  assert names == {"optimizer.learning_rate": "lr", "seed": "seed", "data.seed": "data.seed",
                   "x.y": "why"}
  assert naming.run_name({"optimizer.learning_rate": 1e-3, "x.y": "a/b c"}, names) == (
      "lr=0.001,why=a_b_c")
  assert naming.run_name({"config": "configs/execution.py"}, {"config": "config"}) == (
      "config=execution")
  assert naming.sanitize("../up") == "_.._up"
  assert naming.run_name({}, {}) == "default"

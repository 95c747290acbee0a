"""The shared variant parser (jaxrepr/config_variants.py) and its use by every config file.

The parser: names in command-line order, blanks and empty items ignored, repeats once; an unknown
name or two of an exclusive group is a one-line ConfigError listing the valid choices; a config file
that asks about a name it did not declare is a bug (ValueError). The config files: each reports an
unknown variant through the parser, its exclusive groups reject two of a group, and the order of
the names on the command line does not change the config.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os

import pytest

from jaxrepr import config_variants
from jaxrepr.errors import ConfigError
from tests.core.helpers import REPO, load_config

NAMES = ("pattern", "arc", "grad0", "grad5", "tiny")
GROUPS = (("pattern", "arc"), ("grad0", "grad5"))


def _parse(arg, allowed=NAMES, exclusive=GROUPS):
  return config_variants.parse(arg, allowed, "configs/x.py", exclusive=exclusive)


# --------------------------------------------------------------------------------------- parser
@pytest.mark.parametrize("arg", [None, "", ",", " , "])
def test_nothing_chosen(arg):
  variants = _parse(arg)
  assert variants.names == () and len(variants) == 0 and list(variants) == []
  assert "tiny" not in variants
  assert variants.pick(("pattern", "arc"), default="latent") == "latent"
  assert variants.pick(("pattern", "arc")) is None


def test_names_keep_command_line_order_without_blanks_or_repeats():
  variants = _parse(" tiny, arc,,tiny ,grad5,")
  assert variants.names == ("tiny", "arc", "grad5")
  assert list(variants) == ["tiny", "arc", "grad5"]
  assert "arc" in variants and "tiny" in variants and "pattern" not in variants
  assert variants.pick(("pattern", "arc"), default="pattern") == "arc"
  assert variants.pick(("grad0", "grad5")) == "grad5"


def test_an_unknown_variant_is_one_line_naming_the_file_the_name_and_every_choice():
  with pytest.raises(ConfigError) as e:
    _parse("arc,tinny,huge")
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("unknown variants ['tinny', 'huge'] for configs/x.py; choose from ")
  assert all(repr(n) in message for n in NAMES)
  assert isinstance(e.value, ValueError)  # callers that caught ValueError still do


def test_a_name_differing_only_in_case_is_unknown():
  with pytest.raises(ConfigError, match=r"unknown variants \['Tiny'\]"):
    _parse("Tiny")


@pytest.mark.parametrize(
  "arg,chosen",
  [
    ("pattern,arc", ["pattern", "arc"]),
    ("grad5,tiny,grad0", ["grad5", "grad0"]),
    ("arc,grad0,pattern", ["arc", "pattern"]),
  ],
)
def test_two_of_an_exclusive_group_are_one_line_naming_both_and_the_group(arg, chosen):
  with pytest.raises(ConfigError) as e:
    _parse(arg)
  message = str(e.value)
  assert "\n" not in message
  group = next(g for g in GROUPS if chosen[0] in g)
  assert message == f"configs/x.py: choose at most one of {list(group)}, got {chosen}"


def test_one_of_each_group_is_fine():
  variants = _parse("arc,grad0,tiny")
  assert variants.pick(GROUPS[0]) == "arc" and variants.pick(GROUPS[1]) == "grad0"


def test_pick_refuses_two_of_a_group_that_parse_was_not_told_about():
  variants = _parse("pattern,arc", exclusive=())
  assert variants.names == ("pattern", "arc")
  with pytest.raises(ConfigError, match=r"choose at most one of \['pattern', 'arc'\]"):
    variants.pick(("pattern", "arc"))


def test_a_config_file_asking_about_an_undeclared_name_is_a_bug_not_a_user_error():
  variants = _parse("tiny")
  for ask in (lambda: "tinny" in variants, lambda: variants.pick(("pattern", "grad1"))):
    with pytest.raises(ValueError, match=r"does not declare") as e:
      ask()
    assert not isinstance(e.value, ConfigError)
  with pytest.raises(ValueError, match=r"undeclared variants \['grad1'\]"):
    _parse("tiny", exclusive=[("grad0", "grad1")])
  with pytest.raises(ValueError, match="distinct"):
    _parse("tiny", allowed=("tiny", "tiny"))


def test_a_mapping_of_descriptions_declares_its_keys():
  allowed = {"mlp": "an MLP instead of the CNN", "tiny": "40 steps, for tests"}
  variants = config_variants.parse("tiny", allowed, "configs/c.py")
  assert "tiny" in variants and "mlp" not in variants
  with pytest.raises(ConfigError, match=r"choose from \['mlp', 'tiny'\]"):
    config_variants.parse("an MLP instead of the CNN", allowed, "configs/c.py")


def test_a_non_string_argument_is_a_config_error():
  with pytest.raises(ConfigError, match="comma-separated string"):
    _parse(3)


# --------------------------------------------------------------------------------- config files
def _modules() -> dict[str, object]:
  out = {}
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    name = os.path.basename(path)[:-3]
    spec = importlib.util.spec_from_file_location(f"variants_test_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out[name] = module
  return out


MODULES = _modules()
WITH_VARIANTS = sorted(n for n, m in MODULES.items() if getattr(m, "VARIANTS", ()))


def test_every_config_file_with_variants_parses_them_with_the_shared_parser():
  assert len(WITH_VARIANTS) >= 7, WITH_VARIANTS
  for name in WITH_VARIANTS:
    with open(os.path.join(REPO, "configs", f"{name}.py")) as f:
      source = f.read()
    assert "config_variants.parse(" in source, name
    assert '.split(",")' not in source, f"configs/{name}.py still splits its argument by hand"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_an_unknown_variant_of_a_config_file_lists_its_variants(name):
  with pytest.raises(ConfigError, match="unknown variants") as e:
    load_config(name, "no_such_variant")
  message = str(e.value)
  assert "\n" not in message and "'no_such_variant'" in message
  if name in WITH_VARIANTS:
    assert f"configs/{name}.py" in message
    assert all(repr(v) in message for v in MODULES[name].VARIANTS)


@pytest.mark.parametrize(
  "name,arg",
  [
    ("lpn", "arc,pattern"),
    ("lpn", "overfit,arc_small"),
    ("lpn", "grad0,grad5"),
    ("lpn", "sample25,grad1ss,tiny"),
    ("noprop", "dt,ct"),
    ("noprop", "learned,prototype"),
    ("noprop", "digits,mnist5k"),
    ("noprop_ct", "fm"),
    ("distill", "mnist5k,fashion_mnist"),
    ("distill", "oneshot,recursive"),
    ("distill", "multistage,oneshot"),
    ("enroll", "absolute,scaled"),
  ],
)
def test_variants_that_set_the_same_thing_conflict(name, arg):
  with pytest.raises(ConfigError, match="choose at most one of"):
    load_config(name, arg)


def test_noprop_classifier_takes_no_label_embedding():
  with pytest.raises(ConfigError, match="takes no label embedding"):
    load_config("noprop", "classifier,learned")


def _loads(name: str, arg: str):
  try:
    return load_config(name, arg).to_json(sort_keys=True)
  except ConfigError:
    return None


@pytest.mark.parametrize("name", WITH_VARIANTS)
def test_the_order_of_variants_does_not_change_the_config(name):
  """Every pair of a file's variants: `a,b` and `b,a` give the same config (or both conflict)."""
  checked = 0
  for a, b in itertools.combinations(MODULES[name].VARIANTS, 2):
    forward = _loads(name, f"{a},{b}")
    assert forward == _loads(name, f"{b},{a}"), (name, a, b)
    checked += forward is not None
  assert checked, name


def test_documented_combinations_keep_their_meaning():
  """A few combinations the docs use, field by field (a parser that dropped or reordered a
  variant would change them)."""
  lpn = load_config("lpn", "pattern,grad0")
  assert (lpn.data.name, lpn.model.latent_dim, lpn.model.train_latent.mode) == (
    "pattern",
    32,
    "mean",
  )
  arc = load_config("lpn", "arc,rope")
  assert (arc.data.name, arc.model.positions) == ("arc", "rope")
  noprop = load_config("noprop", "ct,learned,mnist5k")
  assert (noprop.model.variant, noprop.model.embedding, noprop.data.dataset) == (
    "ct",
    "learned",
    "mnist5k",
  )
  assert (
    load_config("noprop_fm", "fashion_mnist,prototype").to_json()
    == load_config("noprop", "fm,fashion_mnist,prototype").to_json()
  )
  distill = load_config("distill", "recursive,small,mnist5k")
  assert (distill.stages.kind, distill.model.student.hidden, distill.data.dataset) == (
    "recursive",
    (4,),
    "mnist5k",
  )
  set_max = load_config("set_max", "cosine,deepsets")
  assert (set_max.optim.schedule, set_max.model.arch) == ("warmup_cosine", "deepsets")
  classifier = load_config("classifier", "mlp,tiny")
  assert (classifier.model.arch, classifier.train.steps) == ("mlp", 40)

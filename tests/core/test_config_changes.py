"""What a resume counts as a changed config (jaxrepr/metrics.py config_changes): the trainer warns
and keeps the earlier config.json beside the new one when the config differs."""

import json

from jaxrepr import config as config_lib, metrics as metrics_lib
from tests.core.helpers import load_config


def _started_with(tmp_path, config, drop=()):
  """A workdir whose config.json an earlier run wrote from `config`, without the fields `drop`
  (as written by code from before those fields existed)."""
  metrics_lib.write_config(str(tmp_path), config, commit="abc1234")
  path = tmp_path / "config.json"
  saved = json.loads(path.read_text())
  for field in drop:
    saved.pop(field)
  path.write_text(json.dumps(saved))


def test_changes_are_fields_that_change_the_run_not_host_settings_or_new_defaults(tmp_path):
  base = config_lib.base_config()
  config = load_config("classifier", "mlp")
  _started_with(tmp_path, config, drop=("compilation_cache_dir", "malloc_huge_pages"))
  # a field added to the code since, at its default: the same run
  assert metrics_lib.config_changes(str(tmp_path), config, base) == []
  # where this host keeps its compilation cache: the same run
  config.compilation_cache_dir = "/elsewhere/xla"
  assert metrics_lib.config_changes(str(tmp_path), config, base) == []
  # a field that changes training is a change; so is a new field away from its default
  config.optim.lr = config.optim.lr * 2
  config.malloc_huge_pages = not base.malloc_huge_pages
  _started_with(tmp_path, load_config("classifier", "mlp"), drop=("malloc_huge_pages",))
  assert metrics_lib.config_changes(str(tmp_path), config, base) == [
    "malloc_huge_pages",
    "optim.lr",
  ]

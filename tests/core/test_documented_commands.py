"""Every documented command line parses as its launcher parses it, and its config validates.

The commands are the `launch/train.py`, `launch/eval.py`, `launch/bench.py` and
`launch/profile_step.py` invocations (and
those of launch/train.py through the cluster scripts launch/slurm_gpu.sbatch and
launch/tpu_pod.sh) in README.md, docs/*.md and the module docstrings of configs/*.py and of the
three launchers: code-block lines (continued by a trailing backslash) and inline code spans
(which may wrap a line). Each one
is parsed with ml_collections' own config flag on a fresh absl FlagValues holding the launcher's
flags, so the config file and its `:variant,variant` load as the launcher loads them, an override
of a field that does not exist or with a value of the wrong type fails as it would on the command
line, and so does a flag the launcher does not define; then `jaxrepr.config.validate` runs. Nothing
is trained.

Placeholders (`DIR`, `/path/to/...`, `<experiment>`, `...`, a single letter such as the `n` of
"n stages") are not values: an override with one only has to name an existing field (a path-like
placeholder: a string field). Shell loops and `case` statements around a command are expanded,
so `--config=configs/noprop.py:$v,mnist5k` is checked for every `v` the loop names.

A second test checks every `--config.a.b` that the same text mentions outside such commands names
a field of some config (a config file's default or one of its VARIANTS).
"""

from __future__ import annotations

import ast
import fnmatch
import glob
import importlib.util
import itertools
import os
import re
import shlex

import absl.app  # noqa: F401 - defines absl's own flags, which every launcher accepts
import absl.logging  # noqa: F401 - the same
import pytest
from absl import flags
from ml_collections import config_dict, config_flags
from ml_collections.config_flags import config_path

from jaxrepr import config as config_lib
from tests.core.helpers import REPO

# config_flags loads config files with the deprecated load_module()
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

LAUNCHERS = ("train", "eval", "bench", "profile_step")
# launch/train.py's --overwrite (moves an old workdir aside): known to the checks until the file
# defines it.
PENDING_FLAGS = {"train": {"overwrite": ("DEFINE_boolean", (False, "Move an old workdir aside."))}}
# docs/running.md's own example of a misspelt field (a run stops on it, naming the field).
DELIBERATELY_WRONG = {"trian.steps"}
_COMMAND = re.compile(r"(?:\bpython3?\s+)?\blaunch/(train|eval|bench|profile_step)\.py\b")
_PLACEHOLDER = re.compile(r"^(\.\.\.|…|[a-z]|[A-Z][A-Z_]*|.*<[^>]*>.*|/path/to/.*|.*\.\.\..*)$")
# The cluster scripts pass CONFIG (and, for SLURM, WORKDIR) and the rest on to launch/train.py.
_WRAPPER = re.compile(r"\blaunch/(slurm_gpu\.sbatch|tpu_pod\.sh)\s+(configs/\S+)")
_SHELL_OPS = {";", "&", "&&", "|", "||"}
_MENTION = re.compile(r"--config\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


# ------------------------------------------------------------------------------------ the texts
def _sources() -> list[tuple[str, list[tuple[int, str]]]]:
  """(repo-relative path, [(line number, line)]) of every text that documents commands."""
  out = []
  for rel in ["README.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))
  ):
    with open(os.path.join(REPO, rel)) as f:
      out.append((rel, list(enumerate(f.read().splitlines(), 1))))
  py = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
  py += [os.path.join(REPO, "launch", f"{name}.py") for name in LAUNCHERS]
  for path in py:
    with open(path) as f:
      text = f.read()
    body = ast.parse(text).body
    if not (
      body
      and isinstance(body[0], ast.Expr)
      and isinstance(body[0].value, ast.Constant)
      and isinstance(body[0].value.value, str)
    ):
      continue
    lines = text.splitlines()[body[0].lineno - 1 : body[0].end_lineno]
    out.append((os.path.relpath(path, REPO), list(enumerate(lines, body[0].lineno))))
  return out


def _command_text(lines: list[tuple[int, str]], i: int, start: int) -> tuple[str, int]:
  """The command starting at column `start` of lines[i] and the index of its last line: to the
  closing backtick inside an inline code span, else to the end of the line and its backslash
  continuations."""
  line = lines[i][1]
  if line[:start].count("`") % 2:  # inside an inline code span
    text, j = line[start:], i
    while "`" not in text and j + 1 < len(lines):
      j += 1
      text += " " + lines[j][1].strip()
    return text.split("`", 1)[0], j
  text, j = line[start:], i
  while text.rstrip().endswith("\\") and j + 1 < len(lines):
    j += 1
    text = text.rstrip()[:-1] + " " + lines[j][1].strip()
  return text, j


def _shell_context(lines: list[tuple[int, str]]):
  """Loop variables ({name: values}) and case-derived ones ({name: (driver, [(patterns, value)])})
  of a text."""
  text = "\n".join(line for _, line in lines)
  loops: dict[str, list[str]] = {}
  for name, values in re.findall(r"\bfor\s+(\w+)\s+in\s+([^;\n]+);\s*do\b", text):
    loops.setdefault(name, [])
    loops[name] += [v for v in values.split() if v not in loops[name]]
  cases: dict[str, tuple[str, list]] = {}
  for driver, body in re.findall(r"\bcase\s+\$\{?(\w+)\}?\s+in\s+(.*?)\besac\b", text, re.S):
    for clause in body.split(";;"):
      m = re.match(r"\s*(\S+?)\)\s*(\w+)=(\S*)\s*$", clause)
      if m:
        cases.setdefault(m.group(2), (driver, []))[1].append((m.group(1).split("|"), m.group(3)))
  return loops, cases


_VAR = re.compile(r"\$\{(\w+)(?:/([^/}]*)/([^}]*))?\}|\$(\w+)")


def _expansions(tokens: list[str], loops, cases) -> list[tuple[dict, list[str]]]:
  """Every (variables, tokens) the shell would run: loop variables take each of their values,
  case-derived ones follow their driver; undefined variables are an error."""
  names = {m.group(1) or m.group(4) for t in tokens for m in _VAR.finditer(t)}
  drivers = sorted({cases[n][0] if n in cases else n for n in names})
  for name in drivers:
    if name not in loops:
      raise AssertionError(f"shell variable ${name} is not set by a `for` loop in this text")
  out = []
  for combo in itertools.product(*(loops[d] for d in drivers)):
    env = dict(zip(drivers, combo))
    for name in names & set(cases):
      driver, clauses = cases[name]
      env[name] = next(
        (
          value
          for patterns, value in clauses
          if any(fnmatch.fnmatchcase(env[driver], p) for p in patterns)
        ),
        "",
      )

    def sub(m, env=env):
      name = m.group(1) or m.group(4)
      value = env[name]
      return value.replace(m.group(2), m.group(3), 1) if m.group(2) else value

    expanded = [_VAR.sub(sub, t) for t in tokens]
    out.append((env, [t for t in expanded if t]))
  return out


def _commands() -> list:
  found = []
  for rel, lines in _sources():
    loops, cases = _shell_context(lines)
    for i, (lineno, line) in enumerate(lines):
      for m in _COMMAND.finditer(line):
        text, _ = _command_text(lines, i, m.start())
        launcher = m.group(1)
        rest = text[m.end() - m.start() :]
        if not m.group(0).startswith("python") and not re.match(r"\s+--", rest):
          continue  # a mention of the file, not a command
        try:
          tokens = shlex.split(rest, comments=True)
        except ValueError as e:
          tokens = [f"<not a shell command line: {e}>"]
        args = []
        for t in tokens:
          if t in _SHELL_OPS:
            break
          args.append(t.rstrip(";"))
          if t.endswith(";"):
            break
        found.append(pytest.param(launcher, args, loops, cases, id=f"{rel}:{lineno}"))
      for m in _WRAPPER.finditer(line):
        text, _ = _command_text(lines, i, m.start())
        tokens = shlex.split(text[m.end() - m.start() :], comments=True)
        workdir = ["--workdir=" + tokens.pop(0)] if m.group(1) == "slurm_gpu.sbatch" else []
        args = [f"--config={m.group(2)}", *workdir, *tokens]
        found.append(pytest.param("train", args, loops, cases, id=f"{rel}:{lineno}"))
  ids = [p.id for p in found]
  return [
    pytest.param(
      *p.values, id=p.id + (f"#{ids[:k].count(p.id) + 1}" if ids.count(p.id) > 1 else "")
    )
    for k, p in enumerate(found)
  ]


COMMANDS = _commands()


# --------------------------------------------------------------------------------- the launchers
def _literal(node):
  """The value of a literal argument; None for one computed at run time (a help text, say)."""
  try:
    return ast.literal_eval(node)
  except ValueError:
    return None


def _launcher_flags(name: str) -> list[tuple[str, tuple, dict]]:
  """(absl DEFINE function, args, kwargs) of every flag launch/<name>.py defines, read from its
  source (importing it would define them on absl's global FLAGS)."""
  with open(os.path.join(REPO, "launch", f"{name}.py")) as f:
    tree = ast.parse(f.read())
  out = []
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Call)
      and isinstance(node.func, ast.Attribute)
      and isinstance(node.func.value, ast.Name)
      and node.func.value.id == "flags"
      and node.func.attr.startswith("DEFINE_")
    ):
      args = [_literal(a) for a in node.args]
      if len(args) > 2 and args[2] is None:  # a help text built at run time
        args[2] = ""
      kwargs = {k.arg: _literal(k.value) for k in node.keywords}
      out.append((node.func.attr, tuple(args), {k: v for k, v in kwargs.items() if v is not None}))
  defined = {args[0] for _, args, _ in out}
  for flag, (define, rest) in PENDING_FLAGS.get(name, {}).items():
    if flag not in defined:
      out.append((define, (flag, *rest), {}))
  return out


_ABSL_FLAGS = {
  f.name
  for module in ("absl.logging", "absl.app")
  for f in flags.FLAGS.get_flags_for_module(module)
}


def _is_placeholder(value: str) -> bool:
  return bool(_PLACEHOLDER.match(value))


def _parse(launcher: str, args: list[str]):
  """The config as launch/<launcher>.py would see it, or None when the command names no config.
  Placeholder values are taken out first and their fields checked to exist."""
  template = any(a.startswith("--config=") and _is_placeholder(a.split("=", 1)[1]) for a in args)
  kept, placeholders = [], []
  for arg in args:
    if template:
      arg = arg.strip("[]")
      if not arg.startswith("--") or arg.startswith("--config"):
        continue  # a template's config part is a pattern, not a config
    assert arg.startswith("--"), f"{arg!r}: the launchers take no positional arguments"
    name, has_value, value = arg[2:].partition("=")
    if has_value and _is_placeholder(value) and name != "config":
      placeholders.append((name, value))
      continue
    kept.append(arg)
  argv = [f"launch/{launcher}.py"] + kept
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
    "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
  )
  for define, fargs, fkwargs in _launcher_flags(launcher):
    getattr(flags, define)(*fargs, **fkwargs, flag_values=fv)
  for name in _ABSL_FLAGS:  # absl's own (--verbosity, ...): every launcher accepts them
    if name not in fv:
      define = flags.DEFINE_boolean if flags.FLAGS[name].boolean else flags.DEFINE_string
      define(name, None, "", flag_values=fv)
  fv(argv)
  config = holder.value
  for name, value in placeholders:
    if name.startswith("config."):
      assert config is not None, f"--{name}={value} without a --config"
      field = name.split(".", 1)[1]
      try:
        field_type = config_path.get_type(field, config)
      except (AttributeError, KeyError) as e:
        raise AttributeError(f"--{name}={value}: the config has no field {field} ({e})") from e
      if "/" in value or "DIR" in value:
        assert field_type is str, f"--{name}={value}: a path, but the field holds {field_type}"
    else:
      assert name in fv, f"--{name}: launch/{launcher}.py defines no such flag"
  return None if template else config


@pytest.mark.parametrize("launcher, args, loops, cases", COMMANDS)
def test_documented_command_parses_and_validates(launcher, args, loops, cases, monkeypatch):
  monkeypatch.chdir(REPO)  # config paths in the docs are relative to the checkout
  for env, expanded in _expansions(args, loops, cases):
    where = f" with {env}" if env else ""
    try:
      config = _parse(launcher, expanded)
      if config is not None:
        config_lib.validate(config)
    except Exception as e:  # noqa: BLE001 - every failure is reported with the command
      pytest.fail(f"launch/{launcher}.py {' '.join(expanded)}{where}: {type(e).__name__}: {e}")


def test_the_command_list_covers_the_documentation():
  """The extraction finds what it must: every kind of launcher, wrapped and looped commands, and
  every config file's own documented command; a test that found nothing would pass vacuously."""
  ids = [p.id for p in COMMANDS]
  launchers = {p.values[0] for p in COMMANDS}
  assert launchers == set(LAUNCHERS), launchers
  for config in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    rel = os.path.relpath(config, REPO)
    assert any(i.startswith(rel + ":") for i in ids), f"{rel}: no documented command found"
  looped = [p for p in COMMANDS if any("$" in a for a in p.values[1])]
  assert looped and all(len(_expansions(p.values[1], p.values[2], p.values[3])) > 1 for p in looped)
  wrapped = [
    p
    for p in COMMANDS
    if any(a.startswith("--config.stages.sparsity_schedule") for a in p.values[1])
  ]
  assert any(p.id.startswith("docs/distill.md:") for p in wrapped), (
    "docs/distill.md's wrapped inline distillation command was not joined"
  )
  for rel, lines in _sources():  # README.md and every docs/*.md page that shows a command
    if rel.endswith(".md") and any(
      re.search(r"\bpython3?\s+launch/(train|eval|bench|profile_step)\.py\b", l) for _, l in lines
    ):
      assert any(i.startswith(rel + ":") for i in ids), f"{rel}: its commands were not found"
  pages = {rel for rel, _ in _sources() if rel.startswith("docs/")}
  assert {
    "docs/lpn.md",
    "docs/noprop.md",
    "docs/set_tasks.md",
    "docs/enroll.md",
    "docs/distill.md",
    "docs/classifier.md",
    "docs/benchmarks.md",
    "docs/parallelism.md",
  } <= pages, pages


def test_a_missing_field_or_a_wrong_type_or_an_unknown_flag_fails(monkeypatch):
  """The checks above can fail: the parser rejects what the launcher rejects."""
  monkeypatch.chdir(REPO)
  good = ["--config=configs/classifier.py", "--config.train.steps=2", "--workdir=DIR"]
  assert _parse("train", good).train.steps == 2
  for bad, error in (
    (["--config.data.no_such_field=1"], AttributeError),
    (["--config.train.steps=two"], flags.IllegalFlagValueError),
    (["--no_such_flag=1"], flags.UnrecognizedFlagError),
    (["--config.nope.steps=n"], AttributeError),
    (["--search=evolution"], flags.UnrecognizedFlagError),
  ):
    with pytest.raises(error):
      _parse("train", good + bad)
  with pytest.raises(flags.IllegalFlagValueError, match="unknown variants"):
    _parse("train", ["--config=configs/classifier.py:no_such_variant"])
  assert _parse("eval", good + ["--search=evolution", "--budget=200"]) is not None


# ---------------------------------------------------------------------------- prose mentions
def _all_configs() -> list:
  configs = []
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    spec = importlib.util.spec_from_file_location("documented_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    configs += [module.get_config(v) for v in (None, *getattr(module, "VARIANTS", ()))]
  return configs


def _has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not isinstance(node, config_dict.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def test_every_mentioned_override_names_a_field():
  configs = _all_configs()
  missing = []
  for rel, lines in _sources():
    for lineno, line in lines:
      if "<experiment>" in line:  # the pattern of a command line (README, docs), not a field
        continue
      for field in _MENTION.findall(line):
        if field not in DELIBERATELY_WRONG and not any(_has_field(c, field) for c in configs):
          missing.append(f"{rel}:{lineno}: --config.{field}")
  assert not missing, "documented fields that no config declares:\n" + "\n".join(missing)

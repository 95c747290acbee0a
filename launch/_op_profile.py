"""Where a compiled train step spends its time, op by op: the pieces of launch/profile_step.py.

A jax.profiler trace of the step records one event per executed XLA instruction (a fusion, a dot,
a copy), named as in the compiled HLO. Joined with the HLO text, every event gets

  * a category: `matmul` (a dot, or a fusion that contains one), `convolution`, `data movement`
    (fusions or instructions made only of transposes, copies, broadcasts, slices, concatenations,
    pads, bitcasts and reshapes: memory traffic, no arithmetic), or `elementwise/reduce` (the
    rest: softmax pieces, masks, bias adds, reductions, the optimizer's updates);
  * for matmuls, the FLOPs of its dots (2 x output elements x contracted size), so the profile
    gives the rate each matmul reached inside the step.

`isolated_dots` lists each matmul's dots with their operand shapes and dimension numbers, so the
caller can time the same dots alone: their sum estimates what the step's matmuls cost by
themselves at XLA's dot speed for those shapes, with no fused work, no other op and the default
operand layouts. Control-flow instructions (while, conditional, and calls other than those XLA's CPU
backend runs as one op) only wrap other events and are not counted. Events are joined on the
`hlo_module` and `hlo_op` that XLA's CPU runtime records with each op, so other programs in the same
trace are left out; an op of the module that matches no classified instruction is reported
(`unmatched_ms`), so a gap in the parsing shows.
"""

from __future__ import annotations

import collections
import dataclasses
import re

CATEGORIES = ("matmul", "convolution", "data movement", "elementwise/reduce")
_MOVEMENT = {
  "parameter",
  "transpose",
  "copy",
  "bitcast",
  "reshape",
  "broadcast",
  "slice",
  "concatenate",
  "pad",
  "dynamic-slice",
  "dynamic-update-slice",
  "constant",
  "tuple",
  "get-tuple-element",
  "iota",
}
_CONTROL = {"while", "conditional", "call"}
_SMALL_CALL = 'xla_cpu_small_call="true"'  # a call XLA's CPU backend runs as one op (one event)
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
_NAME = re.compile(r"^\s+(?:ROOT )?%([\w.\-]+) = ")
_OPCODE = re.compile(r"\s*([\w\-]+)\(")
_CALLS = re.compile(
  r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)|\bbranch_computations=\{([^}]*)\}"
)


@dataclasses.dataclass(frozen=True)
class Instr:
  computation: str
  shape: str  # e.g. 'f32[10,599,128]{2,1,0}'
  opcode: str
  line: str

  def calls(self) -> list[str]:
    names = []
    for m in _CALLS.finditer(self.line):
      listed = m.group(1) or m.group(2)
      names += [n.strip().lstrip("%") for n in listed.split(",") if n.strip()]
    return names


@dataclasses.dataclass(frozen=True)
class Dot:
  """One dot's operand shapes and dimension numbers, as lax.dot_general takes them."""

  dtype: str
  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  lhs_contracting: tuple[int, ...]
  rhs_contracting: tuple[int, ...]
  lhs_batch: tuple[int, ...]
  rhs_batch: tuple[int, ...]

  @classmethod
  def from_dict(cls, d: dict) -> Dot:
    """A Dot from its `dataclasses.asdict` form as stored in a profile (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

  @property
  def flops(self) -> int:
    batch = _prod(self.lhs[d] for d in self.lhs_batch)
    contracted = _prod(self.lhs[d] for d in self.lhs_contracting)
    lhs_free = _prod(self.lhs) // max(batch * contracted, 1)
    rhs_free = _prod(self.rhs) // max(batch * contracted, 1)
    return 2 * batch * lhs_free * rhs_free * contracted


def _prod(xs) -> int:
  p = 1
  for x in xs:
    p *= x
  return p


def dims(shape: str) -> tuple[int, ...]:
  """'f32[10,599,128]{2,1,0}' -> (10, 599, 128); a scalar 'f32[]' -> ()."""
  m = re.match(r"\w+\[([\d,]*)\]", shape)
  if not m:
    return ()
  return tuple(int(x) for x in m.group(1).split(",") if x)


def parse_hlo(text: str) -> dict[str, Instr]:
  """Every instruction of an HLO module's text, by name (names are unique in a module)."""
  instrs, comp = {}, None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header and not line.startswith(" "):
      comp = header.group(1)
      continue
    m = _NAME.match(line)
    if m and comp is not None:
      shape, rest = _split_shape(line[m.end() :])
      op = _OPCODE.match(rest)
      if op:
        instrs[m.group(1)] = Instr(comp, shape, op.group(1), line)
  return instrs


def _split_shape(text: str) -> tuple[str, str]:
  """'f32[2,3]{1,0} dot(...' -> ('f32[2,3]{1,0}', ' dot(...'); a tuple shape '(f32[2], s32[2])'
  (a multi-output fusion, a variadic reduce) is taken whole, up to its closing parenthesis."""
  if not text.startswith("("):
    shape, _, rest = text.partition(" ")
    return shape, rest
  depth = 0
  for i, ch in enumerate(text):
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      return text[: i + 1], text[i + 1 :]
  return text, ""


def _operand_names(line: str) -> list[str]:
  args = line.split("(", 1)[1]
  depth, out = 1, []
  for i, ch in enumerate(args):
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      out = [a.strip() for a in args[:i].split(",")]
      break
  return [a.split()[-1].lstrip("%") for a in out if a]


def _dim_list(line: str, field: str) -> tuple[int, ...]:
  m = re.search(field + r"=\{([\d,]*)\}", line)
  return tuple(int(x) for x in m.group(1).split(",") if x) if m else ()


def dot_of(instrs: dict[str, Instr], name: str) -> Dot:
  instr = instrs[name]
  lhs, rhs = (instrs[n] for n in _operand_names(instr.line)[:2])
  return Dot(
    dtype=instr.shape.split("[")[0],
    lhs=dims(lhs.shape),
    rhs=dims(rhs.shape),
    lhs_contracting=_dim_list(instr.line, "lhs_contracting_dims"),
    rhs_contracting=_dim_list(instr.line, "rhs_contracting_dims"),
    lhs_batch=_dim_list(instr.line, "lhs_batch_dims"),
    rhs_batch=_dim_list(instr.line, "rhs_batch_dims"),
  )


def _members(instrs: dict[str, Instr], by_comp: dict[str, list[str]], name: str) -> list[str]:
  """The instructions a fusion (or a plain instruction) executes: itself, or its called bodies."""
  instr = instrs[name]
  if not _runs_body_inline(instr):
    return [name]
  out, todo = [], list(instr.calls())
  while todo:
    for member in by_comp.get(todo.pop(), []):
      if _runs_body_inline(instrs[member]) or instrs[member].opcode in _CONTROL:
        todo += instrs[member].calls()
      else:
        out.append(member)
  return out


def _runs_body_inline(instr: Instr) -> bool:
  """A fusion, or a call the CPU backend runs as one op: its body's instructions are part of it."""
  return instr.opcode == "fusion" or (instr.opcode == "call" and _SMALL_CALL in instr.line)


def _is_control(instr: Instr) -> bool:
  """While, conditional and (large) call ops only wrap the events of their bodies' ops."""
  return instr.opcode in _CONTROL and not _runs_body_inline(instr)


def classify(instrs: dict[str, Instr]) -> dict[str, tuple[str, list[Dot]]]:
  """{instruction name: (category, its dots)} for every executable instruction."""
  by_comp = collections.defaultdict(list)
  for name, instr in instrs.items():
    by_comp[instr.computation].append(name)
  # a fusion's body and a reduction's combiner run inside their caller, never as events of their own
  inner = set()
  todo = [c for instr in instrs.values() if not _is_control(instr) for c in instr.calls()]
  while todo:  # and so do the bodies of anything inside those (a small call's loop)
    comp = todo.pop()
    if comp not in inner:
      inner.add(comp)
      todo += [c for m in by_comp.get(comp, []) for c in instrs[m].calls()]
  out = {}
  for name, instr in instrs.items():
    if _is_control(instr) or instr.computation in inner:
      continue
    members = _members(instrs, by_comp, name)
    opcodes = {instrs[m].opcode for m in members}
    dots = [dot_of(instrs, m) for m in members if instrs[m].opcode == "dot"]
    if dots:
      category = "matmul"
    elif "convolution" in opcodes:
      category = "convolution"
    elif opcodes <= _MOVEMENT:
      category = "data movement"
    else:
      category = "elementwise/reduce"
    out[name] = (category, dots)
  return out


def module_name(hlo_text: str) -> str:
  """The HLO module's name, from its first line ('HloModule jit_train_step, ...')."""
  m = re.match(r"HloModule ([\w.\-]+)", hlo_text)
  return m.group(1) if m else ""


def op_events(events: list[dict], module: str) -> list[tuple[str, float]]:
  """(instruction name, microseconds) of the complete ('X') events that XLA's CPU runtime recorded
  for the ops of the HLO module `module` (their `hlo_module` and `hlo_op` arguments); events of
  other programs in the same trace and host-side events are left out."""
  out = []
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") == "X" and args.get("hlo_module") == module and "hlo_op" in args:
      out.append((args["hlo_op"], float(e.get("dur", 0.0))))
  return out


def op_times(events: list[tuple[str, float]], names) -> dict[str, tuple[float, int]]:
  """{instruction: (total microseconds, executions)} of the (name, microseconds) events whose name
  is one of `names`."""
  times: dict[str, list] = {}
  for name, us in events:
    if name in names:
      t = times.setdefault(name, [0.0, 0])
      t[0] += us
      t[1] += 1
  return {k: (v[0], v[1]) for k, v in times.items()}


def breakdown(hlo_text: str, events: list[dict], steps: int, devices: int = 1) -> dict:
  """Per-step, per-device time by category, the matmuls' FLOPs and rate, and every op's row
  (slowest first). Several devices run the same program on their own threads: their events add
  up, so times, executions and FLOPs are divided by `devices`."""
  instrs = parse_hlo(hlo_text)
  kinds = classify(instrs)
  ops_run = op_events(events, module_name(hlo_text))
  times = op_times(ops_run, kinds)
  # the module's events that are neither a classified op nor control flow wrapping other events
  control = {n for n, i in instrs.items() if _is_control(i)}
  unmatched = op_times(ops_run, {n for n, _ in ops_run} - set(kinds) - control)
  steps *= devices
  cats = {c: dict(ms=0.0, ops=0) for c in CATEGORIES}
  ops, matmul_flops = [], 0.0
  for name, (us, count) in times.items():
    category, dots = kinds[name]
    ms = us / 1e3 / steps
    cats[category]["ms"] += ms
    cats[category]["ops"] += 1
    flops = sum(d.flops for d in dots) * count / steps
    matmul_flops += flops
    m = re.search(r'op_name="([^"]*)"', instrs[name].line)
    ops.append(
      dict(
        name=name,
        category=category,
        ms=ms,
        executions_per_step=count / steps,
        flops=flops,
        source=m.group(1) if m else "",
        dots=[dataclasses.asdict(d) for d in dots],
      )
    )
  ops.sort(key=lambda o: -o["ms"])
  total = sum(c["ms"] for c in cats.values())
  for c in cats.values():
    c["share"] = c["ms"] / total if total else 0.0
  cats["matmul"]["flops"] = matmul_flops
  cats["matmul"]["flops_per_s"] = matmul_flops / (cats["matmul"]["ms"] / 1e3) if matmul_flops else 0
  return dict(
    op_ms=total,
    categories=cats,
    ops=ops,
    unmatched_ms=sum(us for us, _ in unmatched.values()) / 1e3 / steps,
    unmatched=sorted(unmatched, key=lambda n: -unmatched[n][0])[:10],
  )


def isolated_dots(ops: list[dict]) -> dict[Dot, float]:
  """{dot: executions per step} over the profile's matmul ops."""
  count: dict[Dot, float] = collections.defaultdict(float)
  for op in ops:
    for d in op["dots"]:
      count[Dot.from_dict(d)] += op["executions_per_step"]
  return dict(count)


def table_lines(profiles: dict) -> list[str]:
  """One row per profiled config: where its step's time goes. `dots alone util.` is the matmul
  FLOPs over the same dots' time alone, against the machine's peak: the utilisation the step could
  reach if every other op were free and each dot ran at its own speed alone; `step util.` the same
  FLOPs over the step's wall time."""
  lines = [
    "| config | devices | step ms | op ms | matmul ms (share) | matmul GFLOP | GFLOP/s in step "
    "| same dots alone ms | dots alone util. | step util. | data movement ms "
    "| elementwise/reduce ms | convolution ms | matmul peak GFLOP/s | commit |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, p in profiles.items():
    c = p["categories"]
    # per-device FLOPs and times; the devices of one host run side by side against its one peak
    flops, peak = c["matmul"]["flops"] * p["devices"], p["matmul_peak_flops"]
    lines.append(
      f"| {name} | {p['devices']} | {p['step_ms']:.1f} | {p['op_ms']:.1f} | "
      f"{c['matmul']['ms']:.1f} ({100 * c['matmul']['share']:.0f}%) | {flops / 1e9:.2f} | "
      f"{c['matmul']['flops_per_s'] / 1e9:.1f} | {p['isolated_dot_ms']:.1f} | "
      f"{100 * flops / (p['isolated_dot_ms'] / 1e3) / peak:.0f}% | "
      f"{100 * flops / (p['step_ms'] / 1e3) / peak:.0f}% | "
      f"{c['data movement']['ms']:.1f} | {c['elementwise/reduce']['ms']:.1f} | "
      f"{c['convolution']['ms']:.1f} | {peak / 1e9:.0f} | {p['commit']} |"
    )
  return lines


def core_estimate_lines(profiles: dict, target: float = 0.5) -> list[str]:
  """For each config profiled on one core (`<name>@one_core`), an optimistic estimate of its step:
  all the host's cores split that one core's work perfectly, every matmul fusion runs at its dots'
  speed alone (the elementwise work fused into it and its layouts free: the `left out` column) and
  the other ops take the time they take (one core's dots-alone + data-movement +
  elementwise/reduce + convolution time, divided by the cores); the utilisation that time would
  give (the step's FLOPs as bench.py counts them, against the machine's peak from the
  `<name>@1dev` row, or the cores times one core's peak), and the step time that `target` of the
  peak needs."""
  lines = [
    "| config | one core: dots alone + other ops ms "
    "| left out: matmul fusions beyond their dots ms | cores | estimate ms | step GFLOP "
    f"| peak GFLOP/s | util. at the estimate | {100 * target:.0f}% needs ms | commit |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, p in profiles.items():
    if not name.endswith("@one_core") or "step_flops" not in p:
      continue
    base = name[: -len("@one_core")]
    c, cores = p["categories"], p.get("cpu_count", 1)
    other = c["data movement"]["ms"] + c["elementwise/reduce"]["ms"] + c["convolution"]["ms"]
    estimate = (p["isolated_dot_ms"] + other) / cores
    whole = profiles.get(base + "@1dev")
    peak = whole["matmul_peak_flops"] if whole else cores * p["matmul_peak_flops"]
    flops = p["step_flops"]
    lines.append(
      f"| {base} | {p['isolated_dot_ms']:.1f} + {other:.1f} | "
      f"{c['matmul']['ms'] - p['isolated_dot_ms']:.1f} | {cores} | {estimate:.1f} | "
      f"{flops / 1e9:.2f} | {peak / 1e9:.0f} | {100 * flops / (estimate / 1e3) / peak:.0f}% | "
      f"{1e3 * flops / (target * peak):.1f} | {p['commit']} |"
    )
  return lines

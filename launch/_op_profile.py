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
caller can time the same dots alone: their sum is what the step's matmuls cost at XLA's dot speed
for those shapes with no fused work, no layout changes and no other op, a floor for the step that
no rewrite keeping the same matmul shapes can beat. Control-flow instructions (while, conditional,
call) only wrap other events and are not counted.
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
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
_INSTR = re.compile(r"^\s+(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-, %]+)\}?")


@dataclasses.dataclass(frozen=True)
class Instr:
  computation: str
  shape: str  # e.g. 'f32[10,599,128]{2,1,0}'
  opcode: str
  line: str

  def calls(self) -> list[str]:
    names = []
    for m in _CALLS.finditer(self.line):
      names += [n.strip().lstrip("%") for n in m.group(1).split(",") if n.strip()]
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
    m = _INSTR.match(line)
    if m and comp is not None:
      instrs[m.group(1)] = Instr(comp, m.group(2), m.group(3), line)
  return instrs


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
  if instr.opcode != "fusion":
    return [name]
  out, todo = [], list(instr.calls())
  while todo:
    for member in by_comp.get(todo.pop(), []):
      if instrs[member].opcode == "fusion":
        todo += instrs[member].calls()
      else:
        out.append(member)
  return out


def classify(instrs: dict[str, Instr]) -> dict[str, tuple[str, list[Dot]]]:
  """{instruction name: (category, its dots)} for every executable instruction."""
  by_comp = collections.defaultdict(list)
  for name, instr in instrs.items():
    by_comp[instr.computation].append(name)
  # a fusion's body and a reduction's combiner run inside their caller, never as events of their own
  inner = {c for instr in instrs.values() if instr.opcode not in _CONTROL for c in instr.calls()}
  out = {}
  for name, instr in instrs.items():
    if instr.opcode in _CONTROL or instr.computation in inner:
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


def op_times(events: list[dict], names) -> dict[str, tuple[float, int]]:
  """{instruction: (total microseconds, executions)} from a Chrome/Perfetto trace's complete
  ('X') events whose name is one of `names`."""
  times: dict[str, list] = {}
  for e in events:
    if e.get("ph") == "X" and e.get("name") in names:
      t = times.setdefault(e["name"], [0.0, 0])
      t[0] += float(e.get("dur", 0.0))
      t[1] += 1
  return {k: (v[0], v[1]) for k, v in times.items()}


def breakdown(hlo_text: str, events: list[dict], steps: int) -> dict:
  """Per-step time by category, the matmuls' FLOPs and rate, and every op's row (slowest first)."""
  instrs = parse_hlo(hlo_text)
  kinds = classify(instrs)
  times = op_times(events, kinds)
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
  return dict(op_ms=total, categories=cats, ops=ops)


def isolated_dots(ops: list[dict]) -> dict[Dot, float]:
  """{dot: executions per step} over the profile's matmul ops."""
  count: dict[Dot, float] = collections.defaultdict(float)
  for op in ops:
    for d in op["dots"]:
      count[Dot(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})] += op[
        "executions_per_step"
      ]
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
    flops, peak = c["matmul"]["flops"], p["matmul_peak_flops"]
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

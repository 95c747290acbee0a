"""The layering of DESIGN.md holds: launch -> trainer -> evaluators -> methods -> nn, data beside
methods, no import cycles.

Every .py file of jaxrepr/, launch/ and configs/ is parsed (pure AST, nothing is imported). An edge
is an import at module level or inside a function (`from a import b` resolves to the module a.b
when there is one, else to a), a constant `importlib.import_module`, and a registry lookup: a call
of `lookup('<package>', ...)`, `method_module`, `data_module` or `evaluator_class`, or an
`import_module(f'jaxrepr.<package>.{...}')`, is an edge to every public module of that package
(jaxrepr/registry.py, jaxrepr/config.py). The rules:

  methods-data      jaxrepr/methods/** imports nothing of jaxrepr/data/**.
  data-methods      jaxrepr/data/** imports nothing of jaxrepr/methods/**.
  data-trainer      jaxrepr/data/** imports no trainer module (TRAINER).
  methods-trainer   jaxrepr/methods/** imports no trainer module (a multi-stage runner such as
                    distillation's is handed `train_and_evaluate` by the trainer instead).
  nn-outside        jaxrepr/nn/** imports nothing of jaxrepr outside jaxrepr/nn/ but errors.py
                    (which imports nothing of jaxrepr: a user error names the config field).
  library-launch    nothing in jaxrepr/ imports launch/.
  cycle             no cycle among jaxrepr modules, lookups included.

A violation is reported as `file:line: rule: src -> dst`.
"""

from __future__ import annotations

import ast
import functools
import os
from collections import defaultdict

from tests.core.helpers import REPO

ROOTS = ("jaxrepr", "launch", "configs")
TRAINER = frozenset(
  f"jaxrepr.{m}"
  for m in (
    "train",
    "train_step",
    "checkpoint",
    "optim",
    "parallel",
    "config",
    "metrics",
    "profiling",
    "host_memory",
  )
)
NN_MAY_IMPORT = frozenset({"jaxrepr.errors"})
LOOKUP_HELPERS = {
  "method_module": "jaxrepr.methods",
  "data_module": "jaxrepr.data",
  "evaluator_class": "jaxrepr.evaluators",
}


def _modules(repo: str) -> dict[str, str]:
  """{dotted module name: repo-relative path} of every .py file under ROOTS."""
  out = {}
  for root in ROOTS:
    for d, dirs, files in os.walk(os.path.join(repo, root)):
      dirs[:] = sorted(x for x in dirs if x != "__pycache__")
      for f in sorted(files):
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(d, f), repo)
          name = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
          out[name] = rel
  return out


def _package_members(modules, package: str) -> list[str]:
  """The modules a lookup in `package` may import: the package and its public direct children."""
  out = [package] if package in modules else []
  for name in modules:
    head, _, tail = name.rpartition(".")
    if head == package and not tail.startswith("_"):
      out.append(name)
  return out


class _Edges(ast.NodeVisitor):
  """(line, target module, kind) of every import-like edge of one file, at any nesting depth."""

  def __init__(self, name: str, rel: str, modules):
    self.name, self.modules, self.edges = name, modules, []
    self.package = name if rel.endswith("__init__.py") else name.rpartition(".")[0]

  def _resolve(self, dotted: str) -> str | None:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
      if ".".join(parts[:i]) in self.modules:
        return ".".join(parts[:i])
    return None

  def _add(self, line: int, target: str | None, kind: str, raw: str = "") -> None:
    if target is None and raw.split(".")[0] == "launch":
      target = raw  # an entry point that is not a file here is still an import of launch/
    if target and target != self.name:
      self.edges.append((line, target, kind))

  def visit_Import(self, node):
    for alias in node.names:
      self._add(node.lineno, self._resolve(alias.name), "import", alias.name)

  def visit_ImportFrom(self, node):
    if node.level:
      base = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
      module = ".".join(base + ([node.module] if node.module else []))
    else:
      module = node.module or ""
    for alias in node.names:
      full = f"{module}.{alias.name}"
      target = full if full in self.modules else self._resolve(module)
      self._add(node.lineno, target, "from", full)

  def visit_Call(self, node):
    func = node.func
    fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    first = node.args[0] if node.args else None
    packages = []
    if fname in LOOKUP_HELPERS:
      packages.append(LOOKUP_HELPERS[fname])
    elif fname == "lookup" and isinstance(first, ast.Constant) and isinstance(first.value, str):
      packages.append(f"jaxrepr.{first.value}")
    elif fname == "import_module" and isinstance(first, ast.Constant):
      self._add(node.lineno, self._resolve(first.value), "importlib", first.value)
    elif fname == "import_module" and isinstance(first, ast.JoinedStr):
      prefix = first.values[0].value if isinstance(first.values[0], ast.Constant) else ""
      package = prefix.rstrip(".")
      if prefix.endswith(".") and package in self.modules and package != "jaxrepr":
        packages.append(package)
    for package in packages:
      for target in _package_members(self.modules, package):
        self._add(node.lineno, target, f"lookup {package}")
    self.generic_visit(node)


@functools.lru_cache(maxsize=4)
def import_edges(repo: str = REPO) -> tuple[tuple[str, int, str, str, str], ...]:
  """(src module, line, dst module, kind, src path) for every edge of the project."""
  modules = _modules(repo)
  out = []
  for name, rel in modules.items():
    with open(os.path.join(repo, rel)) as f:
      tree = ast.parse(f.read(), rel)
    visitor = _Edges(name, rel, modules)
    visitor.visit(tree)
    out.extend((name, line, dst, kind, rel) for line, dst, kind in dict.fromkeys(visitor.edges))
  return tuple(out)


def _under(name: str, package: str) -> bool:
  return name == package or name.startswith(package + ".")


def layer_violations(edges) -> list[str]:
  """`file:line: rule: src -> dst` for every edge that breaks a layering rule."""
  found = []
  for src, line, dst, kind, rel in edges:
    rules = []
    if _under(src, "jaxrepr.methods") and _under(dst, "jaxrepr.data"):
      rules.append("methods-data (a method never imports a data module)")
    if _under(src, "jaxrepr.data") and _under(dst, "jaxrepr.methods"):
      rules.append("data-methods (data knows no model)")
    if _under(src, "jaxrepr.data") and dst in TRAINER:
      rules.append("data-trainer (data knows no devices, steps or checkpoints)")
    if _under(src, "jaxrepr.methods") and dst in TRAINER:
      rules.append("methods-trainer (a method is handed the trainer, never imports it)")
    if (
      _under(src, "jaxrepr.nn")
      and _under(dst, "jaxrepr")
      and not _under(dst, "jaxrepr.nn")
      and dst not in NN_MAY_IMPORT
    ):
      rules.append("nn-outside (building blocks import nothing else of jaxrepr)")
    if _under(src, "jaxrepr") and _under(dst, "launch"):
      rules.append("library-launch (the library never imports its entry points)")
    found += [f"{rel}:{line}: {rule}: {src} -> {dst} [{kind}]" for rule in rules]
  return found


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's components of more than one node (iterative: no recursion limit)."""
  index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter[0]
    counter[0] += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter[0]
          counter[0] += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph.get(child, ())))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          out.append(sorted(component))
  return out


def _shortest_loop(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
  """The nodes of a shortest cycle through `start` inside a strongly connected component."""
  parent, frontier = {}, [start]
  while frontier:
    nxt = []
    for node in frontier:
      for child in sorted(graph[node] & members):
        if child == start:
          path = [node]
          while path[-1] != start:
            path.append(parent[path[-1]])
          return [start] + path[::-1][1:] + [start]
        if child not in parent:
          parent[child] = node
          nxt.append(child)
    frontier = nxt
  raise AssertionError(f"{start} is on no cycle")  # unreachable for a component's member


def cycles(edges) -> list[str]:
  """One line per import cycle (strongly connected component) among jaxrepr modules: its size and
  one shortest loop through it, each edge named by file:line."""
  graph: dict[str, set[str]] = defaultdict(set)
  where: dict[tuple[str, str], str] = {}
  for src, line, dst, kind, rel in edges:
    if _under(src, "jaxrepr") and _under(dst, "jaxrepr"):
      graph[src].add(dst)
      graph.setdefault(dst, set())
      where.setdefault((src, dst), f"{rel}:{line} [{kind}]")
  out = []
  for component in _strongly_connected(graph):
    loop = _shortest_loop(component[0], graph, set(component))
    steps = "; ".join(f"{where[a, b]} -> {b}" for a, b in zip(loop, loop[1:]))
    out.append(f"cycle ({len(component)} modules, e.g.): {steps}")
  return out


def test_the_edges_are_found():
  """Guards the guard: known edges of each kind are seen (a parser that found nothing would pass
  every rule)."""
  found = {(src, dst, kind.split()[0]) for src, _, dst, kind, _ in import_edges()}
  assert ("jaxrepr.train", "jaxrepr.checkpoint", "from") in found  # module level
  assert ("jaxrepr.train", "jaxrepr.methods.base", "from") in found
  assert ("jaxrepr.config", "jaxrepr.methods.lpn", "lookup") in found  # config.validate
  assert ("jaxrepr.config", "jaxrepr.evaluators.classifier", "lookup") in found
  assert ("jaxrepr.registry", "jaxrepr.data.sets", "lookup") in found
  assert ("launch.train", "jaxrepr.train", "from") in found  # inside main()


def test_layers_hold():
  violations = layer_violations(import_edges())
  assert not violations, "\n".join(violations)


def test_no_import_cycles():
  found = cycles(import_edges())
  assert not found, "\n".join(found)

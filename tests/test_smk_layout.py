"""The Snakemake layer reads top to bottom: every .smk file uses only names defined in the files
included before it or earlier in itself, and no rule switches mode by testing which wildcards
exist (each family of rules passes its own functions; see rules/common.smk).

The files are compiled to Python by Snakemake's own parser, so names inside rule directives,
f-strings and lambdas are all seen, then read in the Snakefile's include order.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]

# Snakemake binds these before any file runs (common.smk rebinds config to the canonical one).
SNAKEMAKE_GLOBALS = {"config"}


class _SourcePath:
    """The one method of Snakemake's SourceFile that its parser calls."""

    def __init__(self, path: Path):
        self.path = path

    def get_path_or_uri(self, secret_free: bool = True) -> str:
        return str(self.path)


def compiled(path: Path) -> tuple[ast.Module, dict[int, int]]:
    """`path` as the Python Snakemake runs (rules become decorated functions), and the map from
    its lines to the file's."""
    from snakemake.parser import parse

    workflow = SimpleNamespace(sourcecache=SimpleNamespace(open=lambda source: open(source.path)))
    linemap: dict[int, int] = {}
    code, _ = parse(_SourcePath(path), workflow, linemap)
    return ast.parse(code, filename=str(path)), linemap


def _included(node: ast.stmt) -> str | None:
    """The file an `include:` statement names, else None."""
    if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "include"
            and isinstance(node.value.args[0], ast.Constant)):
        return node.value.args[0].value
    return None


def _place(name: str, node: ast.stmt, lines: dict[int, int]) -> str:
    """"file:line" of a statement (a rule's: its first directive's line, not its def's)."""
    line = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return f"{name}:{lines.get(line, line)}"


def statements(snakefile: Path) -> list[tuple[str, ast.stmt]]:
    """("file:line", statement) of the whole workflow in the order Snakemake runs them: each
    included file's statements where the Snakefile includes it."""
    ordered = []
    tree, lines = compiled(snakefile)
    for node in tree.body:
        name = _included(node)
        if name is None:
            ordered.append((_place(snakefile.name, node, lines), node))
        else:
            included, included_lines = compiled(snakefile.parent / name)
            ordered += [(_place(name, stmt, included_lines), stmt) for stmt in included.body]
    return ordered


def defined(node: ast.stmt) -> set[str]:
    """The module-level names a statement binds (rules' own functions, __rule_*, aside)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names = {node.name}
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        names = {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = {n.id for t in targets for n in ast.walk(t)
                 if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    else:
        names = set()
    return {name for name in names if not name.startswith("__")}


def _local(scope: ast.AST) -> set[str]:
    """The names a function or lambda binds itself: its arguments and what it assigns."""
    args = scope.args
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    if not isinstance(scope, ast.Lambda):
        names |= {n.id for n in ast.walk(scope)
                  if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def used(node: ast.AST, bound: frozenset[str] = frozenset()) -> set[str]:
    """The free names a statement reads, at module level or inside its functions."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        outer = node.args.defaults + node.args.kw_defaults
        outer += getattr(node, "decorator_list", [])
        names = set().union(*(used(n, bound) for n in outer if n is not None))
        inner = bound | _local(node)
        body = node.body if isinstance(node.body, list) else [node.body]
        return names.union(*(used(n, inner) for n in body))
    if isinstance(node, ast.comprehension):
        return used(node.iter, bound).union(*(used(n, bound) for n in node.ifs))
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        inner = bound | {n.id for g in node.generators for n in ast.walk(g.target)
                         if isinstance(n, ast.Name)}
        names = set().union(*(used(g, inner) for g in node.generators))
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        return names.union(*(used(n, inner) for n in parts))
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) and node.id not in bound else set()
    return set().union(*(used(child, bound) for child in ast.iter_child_nodes(node)))


def rule_defined(node: ast.stmt) -> set[str]:
    """The rule a statement defines, as `rules.name` (and `checkpoints.name` for a checkpoint)."""
    names = set()
    for decorator in getattr(node, "decorator_list", []):
        if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)):
            continue
        keywords = {k.arg: k.value for k in decorator.keywords}
        name = keywords.get("name" if decorator.func.attr == "rule" else "name_modifier")
        if decorator.func.attr in ("rule", "userule") and isinstance(name, ast.Constant):
            names.add(f"rules.{name.value}")
            checkpoint = keywords.get("checkpoint")
            if isinstance(checkpoint, ast.Constant) and checkpoint.value:
                names.add(f"checkpoints.{name.value}")
    return names


def rule_used(node: ast.stmt) -> set[str]:
    """The rules and checkpoints a statement reads (rules.train, checkpoints.gqa_plan)."""
    return {f"{n.value.id}.{n.attr}" for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id in ("rules", "checkpoints")}


# common.smk's checks of the study's files list the train rule's outputs (train_outputs): the
# input functions of every stage run them, so they live in common.smk, and they run only once
# the DAG is built, after train.smk has defined the rule.
LAZY_RULE_READS = {("rules/common.smk", "rules.train")}


def used_before_defined(snakefile: Path) -> list[str]:
    """One line per name, rule or checkpoint a file reads before the workflow defines it (in a
    later file, or further down the same file)."""
    ordered = statements(snakefile)
    where = {}  # name -> (position, "file:line") of its first definition
    for position, (place, node) in enumerate(ordered):
        for name in defined(node) | rule_defined(node):
            where.setdefault(name, (position, place))
    problems = []
    for position, (place, node) in enumerate(ordered):
        source = place.rsplit(":", 1)[0]
        names = (used(node) - SNAKEMAKE_GLOBALS) | rule_used(node)
        for name in sorted(names):
            if (name in where and where[name][0] > position
                    and (source, name) not in LAZY_RULE_READS):
                problems.append(f"{place} reads {name}, defined only later at {where[name][1]}")
    return problems


WILDCARD_TESTS = re.compile(r"\bin\s+wildcards\b|wildcards\.keys\(\)")


def wildcard_tests(rules_dir: Path) -> list[str]:
    """One line per place a rule file switches on which wildcards exist."""
    return [f"{path.name}:{number}: {line.strip()}"
            for path in sorted(rules_dir.glob("*.smk"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if WILDCARD_TESTS.search(line)]


def test_every_file_reads_only_names_defined_before_it():
    assert used_before_defined(REPO / "Snakefile") == []


def test_no_rule_file_tests_which_wildcards_exist():
    assert wildcard_tests(REPO / "rules") == []


LATER = {
    "Snakefile": 'include: "rules/a.smk"\ninclude: "rules/b.smk"\n',
    "rules/a.smk": 'def paths(wildcards):\n    return f"{LATE}/x"\n\n\n'
                   "rule one:\n    input:\n        helper,\n    output:\n        'x'\n",
    "rules/b.smk": 'LATE = "results/late"\n\n\ndef helper(wildcards):\n    return []\n',
}
CHECKPOINT = {
    "Snakefile": 'include: "rules/a.smk"\n',
    "rules/a.smk": "def chosen(wildcards):\n    return checkpoints.plan.get().output\n\n\n"
                   "checkpoint plan:\n    output:\n        'plan.csv'\n",
}


@pytest.mark.parametrize("files, found", [
    (LATER, ["rules/a.smk:1 reads LATE, defined only later at rules/b.smk:1",
             "rules/a.smk:5 reads helper, defined only later at rules/b.smk:4"]),
    ({**LATER, "rules/a.smk": "X = y\ny = 1\n"},
     ["rules/a.smk:1 reads y, defined only later at rules/a.smk:2"]),
    (CHECKPOINT, ["rules/a.smk:1 reads checkpoints.plan, defined only later at rules/a.smk:5"]),
])
def test_the_check_finds_a_name_defined_later(tmp_path, files, found):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert used_before_defined(tmp_path / "Snakefile") == found


def test_the_check_finds_a_wildcard_test(tmp_path):
    (tmp_path / "a.smk").write_text('def f(wildcards):\n    return "varch" in wildcards.keys()\n')
    (tmp_path / "b.smk").write_text('def g(wildcards):\n    return "seed" in wildcards\n')
    assert len(wildcard_tests(tmp_path)) == 2

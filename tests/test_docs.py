"""The documentation is executed: every ```python block in README.md and docs/*.md runs.

Blocks of one file run in order in one shared namespace, inside a fresh temporary working
directory, so a later block can use what an earlier one defined (as a reader would). A block
opts out only with a visible marker on its fence line: ```python no-run (for GPU-only code).

docs/api.md is also checked against the code: every `tg.name(...)`-style signature in
backticks must name something that exists, and the keywords and defaults it shows must be
those of that function. Every `tinygrad-rnn COMMAND` and its `--options` mentioned in the
docs must exist in the command-line parser.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^(\s*)```(.*)$")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, source) of each runnable ```python block of a Markdown file."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        info = match.group(2).strip().split()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        i += 1  # closing fence
        if info[:1] == ["python"] and "no-run" not in info[1:]:
            blocks.append((start + 1, textwrap.dedent("\n".join(body))))
    return blocks


def test_doc_files_exist():
    names = {p.relative_to(ROOT).as_posix() for p in DOC_FILES}
    for required in ("README.md", "docs/tutorial.md", "docs/rnn-variants.md", "docs/api.md",
                     "docs/design.md"):
        assert required in names


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(path, tmp_path, monkeypatch):
    import tinygrad_rnn as tg

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    dtype = tg.get_default_dtype()
    namespace = {"__name__": "__doc__"}
    try:
        for line, source in python_blocks(path):
            code = compile(source, f"{path.name}:{line}", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                raise AssertionError(
                    f"{path.relative_to(ROOT)}: the python block at line {line} raised "
                    f"{type(exc).__name__}: {exc}") from exc
    finally:
        tg.set_default_dtype(dtype)
        try:
            import matplotlib.pyplot as plt
            plt.close("all")
        except ImportError:
            pass


PATH_MENTION = re.compile(r"`((?:examples|benchmarks|docs|tests|tinygrad_rnn)/[\w./-]+)`")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_mentioned_files_exist(path):
    """Files the docs point at (`examples/x.py`, `benchmarks/results/y.md`, ...) exist."""
    for mention in PATH_MENTION.findall(path.read_text(encoding="utf-8")):
        if "*" in mention:
            assert list(ROOT.glob(mention)), f"{path.name} mentions `{mention}`: no such files"
        elif mention != "benchmarks/results/recurrent.md":  # written by `make bench`
            assert (ROOT / mention).exists(), f"{path.name} mentions `{mention}`, which is missing"


# --------------------------------------------------------------------------- api.md names

# The short names api.md uses, and the module each one stands for.
PREFIXES = {
    "tg": "tinygrad_rnn",
    "Tensor": "tinygrad_rnn:Tensor",
    "F": "tinygrad_rnn.functional",
    "nn": "tinygrad_rnn.nn",
    "init": "tinygrad_rnn.nn.init",
    "nn.utils": "tinygrad_rnn.nn.utils",
    "optim": "tinygrad_rnn.optim",
    "lr_scheduler": "tinygrad_rnn.optim.lr_scheduler",
    "io": "tinygrad_rnn.io",
    "diagnostics": "tinygrad_rnn.diagnostics",
    "backend": "tinygrad_rnn.backend",
    "gradcheck": "tinygrad_rnn.gradcheck",
    "fused": "tinygrad_rnn.ops.fused",
    "ops": "tinygrad_rnn.ops",
    "tasks": "tinygrad_rnn.tasks",
}

SIGNATURE = re.compile(r"`((?:" + "|".join(sorted(map(re.escape, PREFIXES), key=len, reverse=True))
                       + r")\.[A-Za-z_][\w.]*)(\([^`]*\))?`")


def resolve(dotted: str):
    """The object a name like `nn.LSTM.forward` or `Tensor.sum` stands for."""
    for prefix in sorted(PREFIXES, key=len, reverse=True):
        if dotted.startswith(prefix + "."):
            target, rest = PREFIXES[prefix], dotted[len(prefix) + 1:]
            break
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in ([attr] if attr else []) + rest.split("."):
        obj = getattr(obj, part)
    return obj


def documented_parameters(args: str) -> list[tuple[str, str | None]]:
    """(name, default text or None) of each parameter shown in a documented call:
    '(x, dim=-1, *, keepdim=False)' -> [("x", None), ("dim", "-1"), ("keepdim", "False")]."""
    args = args.strip()[1:-1]
    depth, parts, current = 0, [], ""
    for ch in args:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    found = []
    for part in parts:
        name, eq, default = part.partition("=")
        name = name.split(":")[0].strip()
        if name.startswith("*") or name in ("", "/", "...") or not name.isidentifier():
            continue
        found.append((name, default.strip() if eq else None))
    return found


def api_signatures() -> list[tuple[str, str | None]]:
    path = ROOT / "docs" / "api.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    found = []
    for match in SIGNATURE.finditer(text):
        found.append((match.group(1), match.group(2)))
    return found


def test_api_md_mentions_many_names():
    assert len({name for name, _ in api_signatures()}) > 100


@pytest.mark.parametrize("name,args", sorted(set(api_signatures()), key=str),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_api_md_names_exist(name, args):
    try:
        obj = resolve(name)
    except (AttributeError, ImportError) as exc:
        raise AssertionError(f"api.md documents `{name}`, which does not exist ({exc})") from exc
    if not args or not callable(obj):
        return
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return  # builtins without a signature
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for keyword, default in documented_parameters(args):
        assert keyword in params, (
            f"api.md shows `{name}{args}`, but `{keyword}` is not a parameter of it "
            f"(it takes {list(params)})")
        actual = params[keyword].default
        if default is None or actual is inspect.Parameter.empty:
            continue
        try:
            shown = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            continue  # not a literal (e.g. a name): nothing to compare
        assert shown == actual, (
            f"api.md shows `{name}(... {keyword}={default} ...)`, but the default is {actual!r}")



# Packages whose every public name is documented; for plain modules, the names they define.
COVERED = ("tg", "F", "nn", "init", "nn.utils", "optim", "lr_scheduler", "io", "diagnostics",
           "backend", "tasks")


def public_names() -> list[str]:
    names = []
    for prefix in COVERED:
        module = importlib.import_module(PREFIXES[prefix])
        listed = getattr(module, "__all__", None)
        is_package = hasattr(module, "__path__")
        for name in listed or dir(module):
            obj = getattr(module, name)
            if name.startswith("_") or inspect.ismodule(obj):
                continue
            defined_here = getattr(obj, "__module__", None) == module.__name__
            if listed or is_package or defined_here:
                names.append(f"{prefix}.{name}")
    return names


@pytest.mark.parametrize("name", public_names())
def test_public_name_is_documented(name):
    path = ROOT / "docs" / "api.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    assert re.search(re.escape(name) + r"\b", text), f"docs/api.md does not document `{name}`"


# --------------------------------------------------------------------------- the CLI

CLI_SECTION = re.compile(r"^\* `tinygrad-rnn (\w+)`(.*?)(?=^\* |^#|^```|\Z)", re.M | re.S)
COMMAND_LINE = re.compile(r"tinygrad-rnn (\w+)((?: [^\n`]*)?)")


def cli_mentions() -> list[tuple[str, str]]:
    """(command, --option) pairs the docs mention: in api.md's command list and in any
    `tinygrad-rnn COMMAND --option ...` example line of the docs."""
    found = set()
    api = ROOT / "docs" / "api.md"
    if api.exists():
        for match in CLI_SECTION.finditer(api.read_text(encoding="utf-8")):
            found.add((match.group(1), ""))
            options = re.findall(r"`(--[\w-]+)", match.group(2))
            found.update((match.group(1), opt) for opt in options)
    for path in DOC_FILES:
        for match in COMMAND_LINE.finditer(path.read_text(encoding="utf-8")):
            found.add((match.group(1), ""))
            options = re.findall(r"(?<!\S)(--[\w-]+)", match.group(2))
            found.update((match.group(1), opt) for opt in options)
    return sorted(found)


@pytest.mark.parametrize("command,option", cli_mentions(), ids=lambda v: v or "-")
def test_cli_mentions_exist(command, option):
    from tinygrad_rnn.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert command in subparsers.choices, (
        f"the docs mention `tinygrad-rnn {command}`, which does not exist")
    if option:
        options = {s for a in subparsers.choices[command]._actions for s in a.option_strings}
        assert option in options, (
            f"the docs mention `tinygrad-rnn {command} {option}`, which does not exist")


def test_every_cli_option_is_documented():
    from tinygrad_rnn.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    documented = set(cli_mentions())
    missing = [f"{command} {option}"
               for command, sub in subparsers.choices.items()
               for action in sub._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"
               and (command, option) not in documented]
    missing += [command for command in subparsers.choices if (command, "") not in documented]
    assert not missing, f"docs/api.md does not document: {', '.join(missing)}"

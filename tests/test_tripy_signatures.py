"""nvtripy 0.1.7's own signatures, read from its installed sources, against the two pieces of
code that must agree with them: every ``tp.*`` call in ``targets/tripy_gpt.py``, and every public
definition of the CPU stand-in ``tests/nvtripy_standin/``.

mypy checks the adapter's use of nvtripy's classes against its stubs, but nvtripy's functions are
wrapped in unannotated decorators (``export.public_api``, ``wrappers.interface``), so mypy sees
them as Any, and Tensor's operators are attached at import (``register_tensor_method``), so mypy
sees none. These checks read the definitions themselves (``ast``; nvtripy is never imported, its
runtime needs TensorRT). Together: the adapter calls what nvtripy defines, and the stand-in that
runs the adapter on CPU defines it with the same parameters.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
from gpt_conformance.targets import tripy

from tests import nvtripy_standin

ADAPTER = Path(tripy.__file__).with_name("tripy_gpt.py")
STANDIN_FILES = sorted(Path(nvtripy_standin.__file__).parent.glob("*.py"))


def nvtripy_sources() -> Path:
    spec = importlib.util.find_spec("nvtripy")  # finds the package without importing it
    if spec is None or spec.origin is None:
        pytest.skip("nvtripy is not installed (pip install --no-deps nvtripy==0.1.7 gives its sources)")
    return Path(spec.origin).parent


def stub_imports(root: Path) -> dict[str, tuple[Path, str]]:
    """Every public nvtripy name (``__init__.pyi``) -> (its defining source file, its name there)."""
    found = {}
    for node in ast.parse((root / "__init__.pyi").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nvtripy."):
            source = root.joinpath(*node.module.split(".")[1:]).with_suffix(".py")
            found.update({alias.asname or alias.name: (source, alias.name) for alias in node.names})
    return found


def public_definitions(root: Path) -> dict[str, list[ast.arguments]]:
    """Every public nvtripy name -> the argument lists of its definitions (several for overloads;
    a class's are its ``__init__``'s)."""
    found: dict[str, list[ast.arguments]] = {}
    for public, (source, name) in stub_imports(root).items():
        for item in ast.parse(source.read_text()).body:
            if isinstance(item, ast.FunctionDef) and item.name == name:
                found.setdefault(public, []).append(item.args)
            elif isinstance(item, ast.ClassDef) and item.name == name:
                found.setdefault(public, []).extend(f.args for f in methods(item) if f.name == "__init__")
    return found


def methods(cls: ast.ClassDef) -> list[ast.FunctionDef]:
    return [f for f in cls.body if isinstance(f, ast.FunctionDef)]


def nvtripy_methods(root: Path) -> dict[tuple[str, str], list[ast.FunctionDef]]:
    """(public class, method) -> its definitions: methods in the class body, and for ``Tensor`` the
    functions nvtripy attaches with ``@register_tensor_method("name")`` (operators, ``shape``)."""
    found: dict[tuple[str, str], list[ast.FunctionDef]] = {}
    for public, (source, name) in stub_imports(root).items():
        for item in ast.parse(source.read_text()).body:
            if isinstance(item, ast.ClassDef) and item.name == name:
                for f in methods(item):
                    found.setdefault((public, f.name), []).append(f)
    for source in (root / "frontend" / "ops").rglob("*.py"):
        for item in ast.parse(source.read_text()).body:
            if isinstance(item, ast.FunctionDef):
                for deco in item.decorator_list:
                    if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register_tensor_method"
                            and isinstance(deco.args[0], ast.Constant)):
                        found.setdefault(("Tensor", str(deco.args[0].value)), []).append(item)
    return found


# --- the adapter's calls ---------------------------------------------------------------------

def call_fits(call: ast.Call, args: ast.arguments, bound: bool) -> bool:
    params = [a.arg for a in args.posonlyargs + args.args][1 if bound else 0:]
    keywords = {k.arg for k in call.keywords if k.arg is not None}
    names = set(params) | {a.arg for a in args.kwonlyargs}
    if len(call.args) > len(params) and args.vararg is None:
        return False
    return args.kwarg is not None or keywords <= names - set(params[:len(call.args)])


def tp_call_errors(source: str, definitions: dict[str, list[ast.arguments]]) -> list[str]:
    errors = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "tp"):
            continue
        name = node.func.attr
        if not definitions.get(name):
            errors.append(f"line {node.lineno}: tp.{name} is not a public nvtripy function or class with a signature")
        elif not any(call_fits(node, args, bound=bool(args.args) and args.args[0].arg == "self")
                     for args in definitions[name]):
            errors.append(f"line {node.lineno}: tp.{name}(...) matches no signature of nvtripy's {name}")
    return errors


def test_tp_calls_match_nvtripy_signatures():
    definitions = public_definitions(nvtripy_sources())
    assert {"compile", "softmax", "Linear", "InputInfo"} <= set(definitions)
    assert tp_call_errors(ADAPTER.read_text(), definitions) == []


@pytest.mark.parametrize("wrong", [
    "tp.softmax(x, axis=-1)",  # the keyword is dim
    "tp.compile(m, arg=[i])",  # the keyword is args
    "tp.masked_fill(a, b, c, d)",  # one positional too many
    "tp.gelu_erf(x)",  # no such function
])
def test_signature_check_catches_wrong_calls(wrong):
    definitions = public_definitions(nvtripy_sources())
    assert tp_call_errors(wrong, definitions)


# --- the stand-in's definitions --------------------------------------------------------------
# A parameter list, compared by name, kind, default and the names in its annotation. Annotations
# are spelled differently (nvtripy: Optional["nvtripy.Tensor"], the stand-in: Tensor | None), so
# each is reduced to the set of type names it mentions; the stand-in may mention fewer (it
# accepts only what the adapter passes: no NamedDimension in InputInfo), never other ones. Where
# nvtripy annotates nothing (Tensor.dtype's return), the stand-in's annotation is its own.
SPELLINGS = {"Optional": "None", "Tuple": "tuple", "Dict": "dict", "List": "list", "Set": "set"}
IGNORED = {"Union", "Any"}
# Built by nvtripy's runtime, never by a user: the stand-in's constructors take what it needs.
# dtype: nvtripy's dtypes are classes (a metaclass), the stand-in's are instances of one class.
NOT_COMPARED = {("Executable", "__init__"), ("dtype", "__init__"), ("dtype", "__repr__")}


def type_names(node: ast.AST | None) -> set[str]:
    """The type names an annotation mentions, strings parsed, qualifiers dropped."""
    if node is None:
        return set()
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return type_names(ast.parse(node.value, mode="eval").body)
        return {"None"} if node.value is None else set()
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = node.id if isinstance(node, ast.Name) else node.attr
        return {SPELLINGS.get(name, name)} - IGNORED
    return set().union(*(type_names(child) for child in ast.iter_child_nodes(node)))


def parameters(f: ast.FunctionDef) -> list[tuple]:
    """(kind, name, default, annotation names) of each parameter, and the return's names."""
    a = f.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    rows = [("positional", p.arg, d, p.annotation) for p, d in zip(positional, defaults, strict=True)]
    rows += [("*args", a.vararg.arg, None, a.vararg.annotation)] if a.vararg else []
    rows += [("keyword", p.arg, d, p.annotation) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    rows += [("**kwargs", a.kwarg.arg, None, a.kwarg.annotation)] if a.kwarg else []
    rows += [("return", "", None, f.returns)]
    # A default is compared by its last name (datatype.float32 and float32 are the same dtype).
    return [(kind, name, None if d is None else ast.unparse(d).split(".")[-1], type_names(ann))
            for kind, name, d, ann in rows]


def fits(standin: ast.FunctionDef, real: ast.FunctionDef) -> bool:
    ours, theirs = parameters(standin), parameters(real)
    return len(ours) == len(theirs) and all(
        o[:3] == t[:3] and (o[3] <= t[3] or not t[3]) for o, t in zip(ours, theirs, strict=True))


def standin_definitions(sources: list[str]) -> dict[tuple[str, str], list[ast.FunctionDef]]:
    """(class or "", name) -> the stand-in's public definitions; a function with @overload
    declarations is represented by them, not by its catch-all implementation."""
    found: dict[tuple[str, str], list[ast.FunctionDef]] = {}
    public = set(nvtripy_standin.__all__)

    def visible(f: ast.FunctionDef) -> bool:
        return not f.name.startswith("_") or (f.name.startswith("__") and f.name.endswith("__"))

    for item in (node for source in sources for node in ast.parse(source).body):
        if isinstance(item, ast.FunctionDef) and item.name in public:
            found.setdefault(("", item.name), []).append(item)
        elif isinstance(item, ast.ClassDef) and item.name in public:
            for f in filter(visible, methods(item)):
                found.setdefault((item.name, f.name), []).append(f)
    for key, defs in found.items():
        overloads = [f for f in defs if any(getattr(d, "id", None) == "overload" for d in f.decorator_list)]
        found[key] = overloads or defs
    return found


def signature_errors(standin: dict[tuple[str, str], list[ast.FunctionDef]], root: Path) -> list[str]:
    functions: dict[str, list[ast.FunctionDef]] = {}
    for public, (source, name) in stub_imports(root).items():
        functions[public] = [f for f in ast.parse(source.read_text()).body if isinstance(f, ast.FunctionDef)
                             and f.name == name]
    real_methods = nvtripy_methods(root)
    errors = []
    for (cls, name), defs in sorted(standin.items()):
        if (cls, name) in NOT_COMPARED:
            continue
        label = f"{cls}.{name}" if cls else name
        real = real_methods.get((cls, name), []) if cls else functions.get(name, [])
        if not real:
            errors.append(f"{label}: nvtripy 0.1.7 defines no such {'method' if cls else 'function'}")
        for f in defs:
            if not any(fits(f, r) for r in real):
                errors.append(f"{label} (line {f.lineno}): {parameters(f)} matches none of nvtripy's "
                              f"{[parameters(r) for r in real]}")
    return errors


def test_standin_names_are_nvtripy_names_and_cover_the_adapter():
    public = set(stub_imports(nvtripy_sources()))
    assert set(nvtripy_standin.__all__) <= public, "the stand-in defines names nvtripy does not have"
    used = {node.attr for node in ast.walk(ast.parse(ADAPTER.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tp"}
    assert used <= set(nvtripy_standin.__all__), f"the adapter uses tp.{sorted(used - set(nvtripy_standin.__all__))}"


def test_standin_keeps_nvtripy_signatures():
    definitions = standin_definitions([path.read_text() for path in STANDIN_FILES])
    # The operators the adapter's TensorOps protocol names, and what TripyRunner calls.
    assert {("Tensor", "__matmul__"), ("Tensor", "__lt__"), ("Tensor", "shape"), ("Module", "load_state_dict"),
            ("Executable", "__call__"), ("Stream", "synchronize"), ("", "compile"), ("", "arange")} <= set(definitions)
    assert signature_errors(definitions, nvtripy_sources()) == []


@pytest.mark.parametrize("old, new", [
    ("def softmax(input: Tensor, dim: int | None = None)", "def softmax(input: Tensor, axis: int | None = None)"),
    ("dim: int = 0) -> tuple[Tensor, ...]:", "dim: int = 1) -> tuple[Tensor, ...]:"),  # split's default
    ("eps: float = 1e-5", "eps: float = 1e-6"),  # LayerNorm's default
    ("def masked_fill(input: Tensor, mask: Tensor, value: numbers.Number)",
     "def masked_fill(input: Tensor, mask: Tensor, value: str)"),  # an annotation nvtripy does not have
    ("def compile(func: Callable[..., Any], optimization_level: int = 3, *,",
     "def compile(func: Callable[..., Any], optimization_level: int = 3,"),  # args no longer keyword-only
    ("    def eval(self) -> Tensor:", "    def evaluate(self) -> Tensor:"),  # no such method in nvtripy
])
def test_signature_comparison_catches_a_drifted_standin(old, new):
    sources = [path.read_text() for path in STANDIN_FILES]
    assert sum(source.count(old) for source in sources) == 1, old
    drifted = [source.replace(old, new) for source in sources]
    assert signature_errors(standin_definitions(drifted), nvtripy_sources())

"""Shape of the code (issue 7): no import cycles, and the product never imports its simulators.

Imports inside functions count too: a lazy import hides a cycle from Python, not from a reader.
Only `if TYPE_CHECKING:` imports are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "drivers")
SIMULATORS = ("edge.sim", "edge.demo", "edge.demo_run")
# the only product module allowed to reach a simulator: the CLI, to offer the simulator subcommands
MAY_IMPORT_SIMULATORS = ("edge.cli",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the edge/drivers modules it imports (anywhere in its body)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from edge import control` imports the module edge.control, not only the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            deps.update(t for t in targets if t in files and t != name)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_from_package_imports() -> None:
    graph = import_graph()
    assert "edge.supervise" in graph["edge.runner"]  # `from edge import supervise`, inside a function
    assert "edge.sim.cloud_client" in graph["edge.sim.cloud"]
    snippet = "if TYPE_CHECKING:\n    import a\nelse:\n    import b\ndef f():\n    from c import d\n"
    names = [
        n.names[0].name if isinstance(n, ast.Import) else n.module
        for n in _runtime_imports(ast.parse(snippet))
    ]
    assert sorted(names) == ["b", "c"]


def test_no_import_cycles_among_edge_and_drivers_modules() -> None:
    assert find_cycles(import_graph()) == []


def test_the_mqtt_link_holds_no_simulator_and_imports_none() -> None:
    graph = import_graph()
    link = {m: deps for m, deps in graph.items() if _is_under(m, ("edge.cloud",))}
    assert link, "edge/cloud/ not found"
    assert [m for m in link if "sim" in m.rsplit(".", 1)[-1]] == []
    assert {m: sorted(d for d in deps if _is_under(d, SIMULATORS)) for m, deps in link.items()} == {
        m: [] for m in link
    }


def test_product_modules_do_not_import_simulators() -> None:
    graph = import_graph()
    product = [m for m in graph if not _is_under(m, SIMULATORS) and m not in MAY_IMPORT_SIMULATORS]
    wrong = {m: sorted(d for d in graph[m] if _is_under(d, SIMULATORS)) for m in product}
    assert {m: d for m, d in wrong.items() if d} == {}


def test_heavy_reader_libraries_load_only_when_a_reader_needs_them() -> None:
    """A box without a camera, NFC reader or plate camera carries no OpenCV, nfcpy or aiohttp in memory:
    driver modules register their config models without importing them (RSS, start-up time)."""
    import subprocess
    import sys

    code = (
        "import sys, edge.app, edge.config\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'cv2', 'numpy', 'nfc', 'aiohttp', "
        "'zxingcpp', 'pyzbar', 'usb1'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"


def test_gate_commands_do_not_import_the_simulators() -> None:
    """`edge run` / `check-config` on a gate box load no simulator (pymodbus' server, the cloud
    simulator, QR imaging): ~14 MB of RSS. The simulator commands still appear in `edge --help`."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from edge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['check-config', 'config/demo.yaml'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('edge.sim', 'edge.demo', 'segno'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    helptext = subprocess.run([sys.executable, "-m", "edge.cli", "--help"], capture_output=True, text=True,
                              cwd=ROOT).stdout  # fmt: skip
    assert "demo" in helptext and "cloud" in helptext


CORE = ("edge/app.py", "edge/config.py", "edge/flow.py", "edge/reload.py", "edge/runtime.py")
# the generic device/reader machinery the core may use; never a module of one kind
CORE_MAY_IMPORT = ("drivers.device", "drivers.inputs", "drivers.modbus", "drivers.modbus_bus",
                   "drivers.reader", "drivers.registry")  # fmt: skip


def test_the_core_names_no_device_kind_or_reader_type() -> None:
    """Grow by interfaces (issue 7): app, config, flow and reload reach kinds only through the registry,
    so neither a kind's module nor its section/type name appears in them."""
    from drivers.registry import DEVICE_KINDS, READER_TYPES, SECTIONS, load_drivers

    load_drivers()
    names = {*DEVICE_KINDS, *READER_TYPES, *SECTIONS} | {k.rstrip("s") for k in DEVICE_KINDS}
    assert {"doors", "barrier", "elevators", "fire", "serial", "nfc", "camera", "lpr"} <= names  # loaded
    graph = import_graph()
    for rel in CORE:
        path = ROOT / rel
        assert path.exists(), f"{rel} is gone: update CORE"
        mod = _module_name(path)
        kinds = {d for d in graph[mod] if d.startswith("drivers.") and d not in CORE_MAY_IMPORT}
        assert not kinds, f"{rel} imports device or reader modules {sorted(kinds)}"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        said = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not said & names, f"{rel} names kinds {sorted(said & names)}"

"""The layout tells the architecture: no import cycles, each table's SQL in its own module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from daemon.engine.store import Cursors, Jobs, Ledger, OurWrites, Store
from daemon.tavern.write import FileVersion

PACKAGE = Path(__file__).resolve().parents[2] / "daemon"
STORE = PACKAGE / "engine" / "store"


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every daemon module ``path`` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: _imports(path, known) - {name} for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components larger than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # "import daemon.x" from inside daemon/__init__ is not a cycle worth reporting; only edges
    # between real modules count, and a package's __init__ re-exporting its own modules is fine.
    return {
        v: {w for w in ws if not (v.startswith(w + ".") or w.startswith(v + "."))}
        for v, ws in graph.items()
    }


def test_the_chat_codec_does_not_import_the_scanner() -> None:
    graph = _graph()
    assert "daemon.tavern.scan" not in graph["daemon.tavern.chat"]
    assert "daemon.tavern.chat" in graph["daemon.tavern.scan"]


def test_no_module_of_the_daemon_imports_itself_back() -> None:
    assert _cycles(_package_parents(_graph())) == []


_TABLE_WORDS = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|ON)\s+([a-z_]+)\b")
_OWN_TABLES = {
    "jobs.py": {"jobs"},
    "cursors.py": {"cursors"},
    "ledger.py": {"ledger", "jobs"},  # ledger_add checks the job exists (the foreign key's rule)
    "writes.py": {"our_writes"},
    "spend.py": {"spend"},
}


@pytest.mark.parametrize("module", sorted(_OWN_TABLES))
def test_each_table_class_touches_only_its_own_table(module: str) -> None:
    text = (STORE / module).read_text(encoding="utf-8")
    used = set(_TABLE_WORDS.findall(text)) - {"conflict"}
    assert used, f"{module} runs no SQL?"
    assert used <= _OWN_TABLES[module], f"{module} reaches into {used - _OWN_TABLES[module]}"


def test_the_schema_is_defined_only_in_schema_py() -> None:
    ddl = re.compile(r"\b(CREATE|ALTER|DROP)\s+(TABLE|INDEX)\b")
    where = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if ddl.search(p.read_text())
    )
    assert where == ["engine/store/schema.py"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_each_table_class_works_alone_over_its_own_connection(tmp_path: Path) -> None:
    from daemon.tavern.chat import Cursor

    path = tmp_path / "state.db"
    async with await Cursors.open(path) as cursors:
        await cursors.set_cursor(
            "u/chats/A/a.jsonl", Cursor.from_json('{"recent": [], "message_count": 0, "size": 0}')
        )
        assert await cursors.known_chats() == {"u/chats/A/a.jsonl"}
    async with await OurWrites.open(path) as writes:
        await writes.record_write("u/chats/A/a.jsonl", FileVersion(7, 8, 9))
        assert await writes.our_write("u/chats/A/a.jsonl", FileVersion(7, 8, 9))
    async with await Store.open(path) as store:  # all of them, the same rows
        assert await store.known_chats() == {"u/chats/A/a.jsonl"}
        assert isinstance(store, Jobs) and isinstance(store, Ledger)


BACKEND_NAMES = re.compile(
    r"\b(openai|a1111|comfyui|openrouter|gemini|novelai|horde|pollinations|together|nanogpt|"
    r"deepinfra|xai|fal|replicate|bfl)\b"
)


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal of a module except docstrings (prose may name a service)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_only_the_providers_and_the_config_name_a_backend() -> None:
    """The engine, doctor, web and CLI ask a backend's capability record, never its name."""
    allowed = {PACKAGE / "config.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed or (PACKAGE / "providers") in path.parents:
            continue
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            found = BACKEND_NAMES.search(text)
            if found:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {found.group(0)!r}")
    assert offenders == []


def test_the_backend_name_guard_sees_a_name_test() -> None:
    tree = ast.parse('"""About openai."""\nif backend != "openai":\n    pass\n')
    assert [text for _, text in _strings(tree)] == ["openai"]


# --- the layer rules (docs/architecture.md) ------------------------------------------------------

FACES = ("daemon.cli", "daemon.web")
"""What a user acts through; ``daemon.doctor`` and ``daemon.extension`` are tools beside them."""

ABOVE_THE_ENGINE = (*FACES, "daemon.doctor", "daemon.extension", "daemon.__main__")

FRONT = "daemon.engine.front"
SERVICE = "daemon.engine.process.service"

DOOR_EXCEPTIONS = {
    # The run command starts the daemon process with its web face.
    ("daemon.cli.commands", SERVICE),
    # The read-only fast path of `list`, `show` and `status`: the store's own queries over a
    # read-only sqlite3 connection and the engine's own blocking, light readers (the job's
    # folder, the spend summary, the status report), when the engine would cost a second to
    # start (daemon/cli/quick.py); the status screen prints the report either path gathered.
    ("daemon.cli.quick", "daemon.engine.store.reads"),
    ("daemon.cli.quick", "daemon.engine.store.schema"),
    ("daemon.cli.quick", "daemon.engine.jobs.folders"),
    ("daemon.cli.quick", "daemon.engine.jobs.spendsum"),
    ("daemon.cli.quick", "daemon.engine.process.report"),
    ("daemon.cli.statusview", "daemon.engine.process.report"),
    # `accept`'s fast path: the engine's own accept step (one compare-and-set transaction) on a
    # connection opened as the store opens its own, then the daemon woken as the engine wakes it.
    ("daemon.cli.quick", "daemon.engine.jobs.accepting"),
    ("daemon.cli.quick", "daemon.engine.store.moves"),
    ("daemon.cli.quick", "daemon.engine.process.wake"),
    ("daemon.cli.quick", "daemon.engine.process.heartbeat"),
    ("daemon.cli.statusview", "daemon.engine.process.heartbeat"),
}
"""The named ways past the front door; anything else is a failure of the rule."""


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _imports_of(*prefixes: str) -> dict[str, set[str]]:
    """What each module under ``prefixes`` imports of the daemon (the root package's version
    number aside)."""
    graph = _graph()
    return {
        module: {m for m in imported if m != "daemon"}
        for module, imported in graph.items()
        if _within(module, *prefixes)
    }


def _offenders(modules: dict[str, set[str]], allowed: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {imported}"
        for module, found in modules.items()
        for imported in found
        if not _within(imported, *allowed)
    )


def test_tavern_imports_nothing_above_it() -> None:
    """The SillyTavern files (chats, cards, layout, writes) know nothing of jobs or services."""
    assert _offenders(_imports_of("daemon.tavern"), ("daemon.tavern", "daemon.errors")) == []


def test_providers_import_only_the_config_and_the_errors() -> None:
    """An image or text backend is an HTTP client over the config: no job, store or chat."""
    allowed = ("daemon.providers", "daemon.config", "daemon.errors")
    assert _offenders(_imports_of("daemon.providers"), allowed) == []


def test_the_job_vocabulary_sits_below_the_store_and_the_logs() -> None:
    assert _offenders(_imports_of("daemon.jobstate"), ("daemon.tavern.chat",)) == []
    logs = _imports_of("daemon.logs")
    assert _offenders(logs, ("daemon.config", "daemon.jobstate", "daemon.errors")) == []


def test_the_configuration_sits_below_the_engine() -> None:
    """``configure/`` (the live config, its safe writer, the style catalogue) is used by the
    engine and the faces; it builds only on the config, the providers' registry, the logs and
    the errors, never on a room of the engine."""
    allowed = (
        "daemon.configure",
        "daemon.config",
        "daemon.providers",
        "daemon.logs",
        "daemon.jobstate",
        "daemon.errors",
    )
    assert _offenders(_imports_of("daemon.configure"), allowed) == []


def test_the_store_is_persistence_only() -> None:
    """The store keeps rows: it imports no other room of the engine, no provider, no face."""
    allowed = ("daemon.engine.store", "daemon.jobstate", "daemon.tavern", "daemon.errors")
    assert _offenders(_imports_of("daemon.engine.store"), allowed) == []


def test_no_upward_import() -> None:
    """Nothing below the faces imports a face, the doctor or the extension installer; the
    daemon process is composed with its web face from the top (the ``run`` command)."""
    below = _imports_of(
        "daemon.engine",
        "daemon.tavern",
        "daemon.providers",
        "daemon.jobstate",
        "daemon.logs",
        "daemon.config",
        "daemon.errors",
    )
    upward = sorted(
        f"{module} imports {imported}"
        for module, found in below.items()
        for imported in found
        if _within(imported, *ABOVE_THE_ENGINE)
    )
    assert upward == []


def test_faces_use_only_the_front_door() -> None:
    """The CLI, the web, the doctor and the extension installer reach the engine through
    ``engine/front.py`` alone; the exceptions are named in :data:`DOOR_EXCEPTIONS` (the ``run``
    command, which starts the daemon process with its web face, and the fast path of ``list``,
    ``show``, ``status`` and ``accept``)."""
    reached = sorted(
        f"{module} imports {imported}"
        for module, found in _imports_of(*ABOVE_THE_ENGINE).items()
        for imported in found
        if _within(imported, "daemon.engine") and imported != FRONT
        if (module, imported) not in DOOR_EXCEPTIONS
    )
    assert reached == []


def test_inside_the_engine_only_the_daemon_process_builds_on_the_front_door() -> None:
    """The rooms along the job's journey (intake, look, jobs, commit, store) never import the
    front door or the daemon process that sit on top of them."""
    top = sorted(
        f"{module} imports {imported}"
        for module, found in _imports_of("daemon.engine").items()
        for imported in found
        if imported in (FRONT, SERVICE) and (module, imported) != (SERVICE, FRONT)
        if module not in (FRONT, SERVICE)
    )
    assert top == []


def test_the_rules_see_a_violation() -> None:
    assert _offenders({"daemon.tavern.x": {"daemon.engine.store"}}, ("daemon.tavern",)) == [
        "daemon.tavern.x imports daemon.engine.store"
    ]
    assert _within("daemon.engine.front", "daemon.engine")
    assert not _within("daemon.engineering", "daemon.engine")


# --- request bodies ----------------------------------------------------------------------------

WEB = PACKAGE / "web"
BODIES = WEB / "bodies.py"
_RAW_READS = frozenset({"json", "form", "body", "stream"})
"""What reads a request's body raw (starlette's ``Request`` methods, called without a
positional argument: ``client.stream("GET", url)`` is no request body)."""
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _raw_body_reads(source: str) -> list[str]:
    """Where ``source`` reads a request's body itself (``request.json()``, ``.form()``, ...)
    or reaches into the body layer's private reader."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _RAW_READS
            and not node.args
        ):
            found.append(f"line {node.lineno}: .{node.func.attr}()")
        elif isinstance(node, ast.ImportFrom) and node.module == "daemon.web.bodies":
            found.extend(
                f"line {node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name.startswith("_")
            )
    return found


def _body_types() -> set[str]:
    tree = ast.parse(BODIES.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name.endswith("Body")
    }


def _routes_without_a_body_type(source: str, types: set[str]) -> list[str]:
    """The handlers of routes taking a body (POST, PUT, ...) that never call
    ``parsed(request, <a type of bodies.py>.parse)``, themselves or through a helper of their
    module."""
    tree = ast.parse(source)
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }

    def typed_read(call: ast.Call) -> bool:
        named = isinstance(call.func, ast.Name) and call.func.id == "parsed"
        parse = call.args[1] if len(call.args) > 1 else None
        return (
            named
            and isinstance(parse, ast.Attribute)
            and parse.attr == "parse"
            and isinstance(parse.value, ast.Name)
            and parse.value.id in types
        )

    def reads_typed(name: str, seen: set[str]) -> bool:
        if name in seen or name not in functions:
            return False
        seen.add(name)
        calls = [n for n in ast.walk(functions[name]) if isinstance(n, ast.Call)]
        if any(typed_read(call) for call in calls):
            return True
        callees = {c.func.id for c in calls if isinstance(c.func, ast.Name)}
        return any(reads_typed(callee, seen) for callee in callees)

    missing = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Route"):
            continue
        methods = next((k.value for k in node.keywords if k.arg == "methods"), None)
        verbs = {
            e.value
            for e in getattr(methods, "elts", [])
            if isinstance(e, ast.Constant) and isinstance(e.value, str)
        }
        handler = node.args[1] if len(node.args) > 1 else None
        if isinstance(handler, ast.Name) and verbs & _WRITES and not reads_typed(handler.id, set()):
            missing.append(handler.id)
    return missing


def test_only_the_body_layer_reads_a_request_body() -> None:
    """Every web route gets its body as a type of ``web/bodies.py`` through ``parsed``: no
    other module reads ``request.json()``, a form or the raw stream."""
    offenders = {
        path.name: reads
        for path in sorted(WEB.rglob("*.py"))
        if path != BODIES
        for reads in [_raw_body_reads(path.read_text(encoding="utf-8"))]
        if reads
    }
    assert offenders == {}


def test_every_route_taking_a_body_reads_it_through_its_type() -> None:
    types = _body_types()
    assert {"SettingsBody", "CharacterBody", "ReferenceBody", "GenerateBody"} <= types
    missing = {
        path.name: routes
        for path in sorted(WEB.rglob("*.py"))
        for routes in [_routes_without_a_body_type(path.read_text(encoding="utf-8"), types)]
        if routes
    }
    assert missing == {}


def test_the_body_rules_see_a_violation() -> None:
    raw = "async def save(request):\n    data = await request.json()\n"
    assert _raw_body_reads(raw) == ["line 2: .json()"]
    form = "async def upload(request):\n    async with request.form() as form:\n        pass\n"
    assert _raw_body_reads(form) == ["line 2: .form()"]
    private = "from daemon.web.bodies import _read_object, parsed\n"
    assert _raw_body_reads(private) == ["line 1: imports _read_object"]
    untyped = (
        "async def save(request):\n"
        "    return await helper(request)\n"
        "async def helper(request):\n"
        "    return await parsed(request, dict)\n"
        "async def fine(request):\n"
        "    return await parsed(request, SettingsBody.parse)\n"
        "ROUTES = [Route('/a', save, methods=['POST']), Route('/b', fine, methods=['POST']),\n"
        "          Route('/c', save, methods=['GET'])]\n"
    )
    assert _routes_without_a_body_type(untyped, {"SettingsBody"}) == ["save"]

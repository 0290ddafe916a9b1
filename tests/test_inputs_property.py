"""Every input a user types, generated (hypothesis): trial configs, search spaces, study names, budgets,
database URLs, Ray addresses and resource numbers, as random text and as valid inputs with one field
corrupted, so that the validators are exercised deep as well as at the door.

The oracle, for every input: ``mimax`` (called in-process, ``mimax.cli.main``) either accepts it, or
rejects it with exactly one line on stderr, ``mimax: error: ...``, and exit code 2 — never a traceback,
never another exit code — and a rejected ``launch`` leaves the database as it was: no new study and no
half-made one (a mimax study without its Optuna study or the reverse). Where the verdict is known
independently (a NaN anywhere in a config, an unknown key, a name the rules refuse) it is checked too.

Nothing here starts Ray or trains: the engine's run entry point, ``ray.init`` and the trainer are
recorders, and no connection leaves loopback: a guard refuses any other address before a packet is sent,
and the loopback ports tried are ports this test found closed (or its own listener). Examples are
derandomized, so CI sees the same inputs on every run.
"""

from __future__ import annotations

import copy
import errno
import functools
import io
import json
import math
import os
import re
import socket
import sqlite3
import string
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mimax.cli import main

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "mimax" / "search_spaces" / "presets"
TEST_SPACES = ROOT / "tests" / "study" / "spaces"

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


def examples(n: int):
    """``n`` examples (times $MIMAX_FUZZ_SCALE, for a longer hunt or a quick look)."""
    return settings(FUZZ, max_examples=max(1, round(n * float(os.environ.get("MIMAX_FUZZ_SCALE", "1")))))


# ---- the harness: mimax in-process, with Ray, the trainer and the network fenced off ------------------

class Reached(Exception):
    """A trial config passed validation and reached the trainer (which would now train)."""


@dataclass
class World:
    tmp: Path
    space: Path  # a small valid grid space (tests/study/spaces/tiny-grid.yaml)
    config: Path  # a small valid trial config
    closed_ports: list[int]
    listener_port: int
    runs: list = field(default_factory=list)  # (study name, RunOptions) that reached the engine's _run
    inputs: int = 0
    launches: dict = field(default_factory=dict)  # test -> launches that created a study

    def may_create(self, test: str, quota: int = 3) -> bool:
        """Whether ``test`` may launch one more study for real (Optuna's storage costs ~0.5 s a study);
        past its quota an input that would be accepted is sent to a name that is taken instead."""
        self.launches[test] = self.launches.get(test, 0) + 1
        return self.launches[test] <= quota


def _closed_ports(n: int) -> list[int]:
    ports = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()  # nothing listens there now
    return ports


def _listener() -> tuple[socket.socket, int]:
    """A TCP server on loopback that is not Ray: it accepts and hangs up."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


LOOPBACK = ("127.0.0.1", "::1", "localhost")

# A small valid trial config: the base of the engine tests' grid space with one of its estimators.
SMALL_CONFIG = {**yaml.safe_load((TEST_SPACES / "tiny-grid.yaml").read_text())["base"], "estimator": {"name": "nce"},
                "seed": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import ray

    import mimax.cli as cli
    import mimax.study.engine as engine
    import mimax.trainables.loop as loop

    tmp = tmp_path_factory.mktemp("inputs")
    srv, listener_port = _listener()
    w = World(tmp=tmp, space=tmp / "tiny-grid.yaml", config=tmp / "config.yaml", closed_ports=_closed_ports(4),
              listener_port=listener_port)
    w.space.write_text((TEST_SPACES / "tiny-grid.yaml").read_text())
    w.config.write_text(yaml.safe_dump(SMALL_CONFIG))
    allowed = set(w.closed_ports) | {listener_port}
    real_connect = socket.create_connection

    def guarded_connect(address, *args, **kwargs):
        host, port = address[0], address[1]
        if host in LOOPBACK and port in allowed:
            return real_connect(address, *args, **kwargs)
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by the test's guard (loopback only)")

    def fake_init(address=None, **kwargs):
        if address != "local":  # joining: whatever answered on loopback is not a Ray head
            raise ConnectionError("test: no Ray head here")

    def fake_run(store, name, space, opts, sched, session):
        w.runs.append((name, opts))
        return {"name": name, "status": "completed", "total": 0, "states": {}}

    class FakeTrainer:
        def __init__(self, raw):
            raise Reached(raw)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.delenv("MIMAX_DB", raising=False)
        mp.setattr(sys, "argv", ["mimax"])  # cluster.connect scrubs sys.argv
        for var, value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_AIR_NEW_OUTPUT", "0"),
                           ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"),
                           ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")):
            mp.setenv(var, os.environ.get(var, value))  # restored afterwards; connect() sets them
        mp.setattr(socket, "create_connection", guarded_connect)
        mp.setattr(ray, "init", fake_init)
        mp.setattr(ray, "is_initialized", lambda: False)
        mp.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 0.0}}])
        mp.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
        mp.setattr(engine, "_run", fake_run)
        mp.setattr(loop, "Trainer", FakeTrainer)
        # One parser for all inputs, as a process has: argparse's set-up costs ~20 ms a parser.
        mp.setattr(cli, "build_parser", functools.cache(cli.build_parser))
        yield w
    srv.close()
    print(f"\n{w.inputs} generated inputs run through mimax")


def mimax(world: World, *argv) -> tuple[int, str, str]:
    """``mimax ARGV`` in-process: (exit code, stdout, stderr); a Reached trainer counts as exit 0."""
    world.inputs += 1
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            code = exc.code or 0
        except Reached:
            code = 0
    return code, out.getvalue(), err.getvalue()


PREFIX = "mimax: error: "


def outcome(code: int, err: str, *, rejected: bool | None = None, naming: str | None = None) -> bool:
    """Assert the contract for one input; return whether it was rejected."""
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX) and len(lines[0]) > len(PREFIX) + 3, err
        if naming is not None:
            assert naming in lines[0], (naming, lines[0])
    if rejected is not None:
        assert (code == 2) == rejected, (code, err)
    return code == 2


def studies(db: Path) -> tuple[set[str], set[str]]:
    """(mimax's study names, Optuna's study names) in a SQLite file; empty when it has no tables."""
    if not db.exists():
        return set(), set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        def names(sql):
            try:
                return {r[0] for r in con.execute(sql)}
            except sqlite3.OperationalError:  # no such table
                return set()

        return names("SELECT name FROM mimax_studies"), names("SELECT study_name FROM studies")
    finally:
        con.close()


def whole(before: tuple[set, set], after: tuple[set, set], new: str | None) -> None:
    """Nothing but study ``new`` (None: nothing) appeared, with its Optuna study; every study is whole."""
    assert after[0] - before[0] == ({new} if new else set()), (before, after)
    assert after[1] - before[1] == ({f"mimax:{new}"} if new else set()), (before, after)
    assert {f"mimax:{n}" for n in after[0]} <= after[1]


# ---- strategies ---------------------------------------------------------------------------------------

# What a shell can hand over: any text but NUL; plus undecodable bytes as Python decodes argv.
ARG_TEXT = st.one_of(
    st.text(st.characters(blacklist_characters="\x00"), max_size=40),
    st.text(alphabet=string.printable.replace("\x00", ""), max_size=40),
    st.binary(min_size=1, max_size=20).filter(lambda b: b"\x00" not in b).map(os.fsdecode),
)
NAME_CHARS = string.ascii_letters + string.digits + "._-"
VALID_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


def name_ok(name: str) -> bool:
    """The study-name rule as the docs state it (independent of mimax.storage.db's regular expression)."""
    return 1 <= len(name) <= 128 and name[0] in NAME_CHARS[:-3] and all(c in NAME_CHARS for c in name)


@st.composite
def mutated_name(draw) -> str:
    """A valid name with one character replaced or inserted, or stretched past the limit."""
    name = draw(VALID_NAME)
    how = draw(st.sampled_from(["replace", "insert", "long", "path", "dots"]))
    if how == "long":
        return name + "x" * draw(st.integers(128 - len(name), 400))
    if how == "path":
        return draw(st.sampled_from(["../", "/", "a/", "..\\", "~/"])) + name
    if how == "dots":
        return draw(st.sampled_from([".", "..", "-", "_", ".hidden", "-x"]))
    i = draw(st.integers(0, len(name)))
    c = draw(st.characters(blacklist_characters="\x00"))
    return name[:i] + c + name[i + (how == "replace"):]


STUDY_NAMES = st.one_of(VALID_NAME, mutated_name(), ARG_TEXT)

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**31, max_value=2**70),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 1e308, -0.0]),
    st.text(max_size=12), st.sampled_from(["1e-3", "mlp", "torch", "none", "", "nan"]),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=4)), max_size=2),
)
UNKNOWN_KEY = st.from_regex(r"x_[a-z]{1,8}", fullmatch=True)


def _paths(node, prefix=()):
    """Every place in a nested dict/list (its keys and list positions) with its value."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,), v
        yield from _paths(v, prefix + (k,))


def _at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@dataclass
class Mutation:
    tree: object
    kind: str  # replace, nonfinite, unknown_key, delete
    path: tuple
    key: str | None = None


@st.composite
def mutation(draw, valid) -> Mutation:
    """``valid`` with one place corrupted: a value replaced by junk or by NaN/inf, a key deleted, or an
    unknown key added to a mapping."""
    tree = copy.deepcopy(valid)
    places = list(_paths(tree))
    kind = draw(st.sampled_from(["replace", "replace", "nonfinite", "unknown_key", "delete"]))
    if kind == "unknown_key":
        maps = [()] * isinstance(tree, dict) + [p for p, v in places if isinstance(v, dict)]
        path = draw(st.sampled_from(maps))
        key = draw(UNKNOWN_KEY)
        _at(tree, path)[key] = draw(JUNK)
        return Mutation(tree, kind, path, key)
    path, _ = draw(st.sampled_from(places))
    parent = _at(tree, path[:-1])
    if kind == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(st.sampled_from([math.nan, math.inf, -math.inf]) if kind == "nonfinite" else JUNK)
    return Mutation(tree, kind, path)


def _has_nonfinite(tree) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) for _, v in _paths({"": tree}))


@st.composite
def document(draw, tree) -> str:
    """``tree`` as a file: JSON when it can be, else (or by choice) YAML."""
    if draw(st.booleans()):
        try:
            return json.dumps(tree, allow_nan=False)
        except (TypeError, ValueError):
            pass
    return yaml.safe_dump(tree, allow_unicode=draw(st.booleans()), sort_keys=False)


RANDOM_FILE = st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                        st.sampled_from(["", "- 1\n- 2\n", "a: [", "a: 1\na: 2\n", "*x", "!!python/object:os.system {}",
                                         "[" * 300, "{a: " * 60, "key: \x00"]))


# ---- the valid inputs the mutations start from are valid ----------------------------------------------

def test_the_valid_inputs_are_accepted(world):
    for i, config in enumerate(VALID_CONFIGS):
        path = world.tmp / f"valid{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        code, _, err = mimax(world, "train", path)
        outcome(code, err, rejected=False)
    for i, space in enumerate(VALID_SPACES):
        path = world.tmp / f"valid-space{i}.yaml"
        path.write_text(yaml.safe_dump(space, sort_keys=False))
        code, _, err = mimax(world, "spaces", "validate", path)
        outcome(code, err, rejected=False)


# ---- study names (the reported bug: a 300-character name) ---------------------------------------------

def test_a_300_character_name_is_refused_before_anything_is_written(world):
    db = world.tmp / "long.db"
    code, _, err = mimax(world, "launch", "fig3-critics", "--budget", "smoke", "--name", "a" * 300,
                         "--db", f"sqlite:///{db}")
    outcome(code, err, rejected=True, naming="--name")
    assert "at most 128" in err and not db.exists()


@given(name=STUDY_NAMES)
@examples(2500)
def test_study_names(world, name):
    """A refused name is refused first, naming --name; an accepted one is never what is refused (past a
    few real launches each input also carries --cpus-per-trial 0, which must be the refusal then)."""
    db = world.tmp / "names.db"
    before = studies(db)
    full = name_ok(name) and world.may_create("names")
    probe = [] if full else ["--cpus-per-trial=0"]
    code, _, err = mimax(world, "launch", world.space, f"--name={name}", "--db", f"sqlite:///{db}", "--quiet", *probe)
    accept = full and name not in before[0]
    rejected = outcome(code, err, rejected=not accept)
    if not name_ok(name):
        assert err.startswith(f"{PREFIX}--name: "), err
    elif not full:
        assert err.startswith(f"{PREFIX}--cpus-per-trial: "), err
    whole(before, studies(db), None if rejected else name)


# ---- run options: CPUs, GPUs, concurrency, packs, scheduler, Ray address -----------------------------

NUMBER_TEXT = st.one_of(
    st.floats().map(repr), st.integers(-10, 10).map(str), st.integers().map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-0", "0x10", "1_0", "", " 1", "1e-300", "½", "٣"]),
    ARG_TEXT,
)
VALID_OPTIONS = {"--cpus-per-trial": "1", "--gpus-per-trial": "0", "--max-concurrent": "2", "--pack": "auto",
                 "--scheduler": "none", "--address": "local"}


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def option_ok(option: str, text: str) -> bool:
    """Whether the fake cluster (one node: 4 CPUs, no GPU) takes ``text`` for ``option``."""
    if option == "--cpus-per-trial":
        v = _float(text)
        return v is not None and math.isfinite(v) and 0 < v <= 4
    if option == "--gpus-per-trial":
        return _float(text) == 0  # this cluster has no GPU: only 0 can ever run
    if option == "--max-concurrent":
        v = _int(text)
        return v is not None and v >= 1
    if option == "--pack":
        v = _int(text)
        return text == "auto" or (v is not None and v >= 1)
    if option == "--scheduler":
        return text in ("none", "asha")
    if option == "--address":
        return text == "local"  # nothing else on loopback is a Ray head, and nothing else is reached
    raise AssertionError(option)


@st.composite
def addresses(draw, world) -> str:
    port = draw(st.sampled_from([*world.closed_ports, world.listener_port]))
    return draw(st.one_of(
        st.sampled_from([f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"ray://127.0.0.1:{port}",
                         "auto", "local", "127.0.0.1", ":", f"127.0.0.1:{port}0000", "127.0.0.1:0",
                         "127.0.0.1:-1", f"{'a' * 64}.example:80", "a..b:80", "ü.example:80", "host:99999"]),
        st.builds(lambda h, p: f"{h}:{p}", st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5})?", fullmatch=True),
                  st.integers(-1, 70000)),
        ARG_TEXT,
    ))


@given(data=st.data())
@examples(400)
def test_run_options(world, data):
    db = world.tmp / "options.db"
    options = dict(VALID_OPTIONS)
    corrupt = data.draw(st.lists(st.sampled_from(sorted(VALID_OPTIONS)), min_size=1, max_size=2, unique=True))
    for option in corrupt:
        if option == "--address":
            options[option] = data.draw(addresses(world))
        elif option == "--scheduler":
            options[option] = data.draw(st.one_of(st.sampled_from(["asha", "none", "ASHA", "pbt", ""]), ARG_TEXT))
        else:
            options[option] = data.draw(NUMBER_TEXT)
    bad = [k for k, v in options.items() if not option_ok(k, v)]
    taken = not bad and not world.may_create("options")
    name = "taken" if taken else f"opt{world.inputs}"
    if taken and "taken" not in studies(db)[0]:
        assert mimax(world, "launch", world.space, "--name", name, "--db", f"sqlite:///{db}", "--quiet")[0] == 0
    before = studies(db)
    argv = [f"{k}={v}" for k, v in options.items()]
    code, _, err = mimax(world, "launch", world.space, "--name", name, "--db", f"sqlite:///{db}", "--quiet", *argv)
    rejected = outcome(code, err, rejected=bool(bad) or taken)
    if len(bad) == 1:
        assert err.startswith(f"{PREFIX}{bad[0]}: ") or err.startswith(f"{PREFIX}launch: argument {bad[0]}: "), err
    if taken:
        assert "already exists" in err, err
    whole(before, studies(db), None if rejected else name)


def test_a_listening_port_that_is_not_ray_is_one_line(world):
    code, _, err = mimax(world, "launch", world.space, "--name", "lst", "--db", f"sqlite:///{world.tmp / 'l.db'}",
                         "--address", f"127.0.0.1:{world.listener_port}", "--quiet")
    outcome(code, err, rejected=True, naming="refused this driver")
    code, _, err = mimax(world, "launch", world.space, "--name", "cls", "--db", f"sqlite:///{world.tmp / 'l.db'}",
                         "--address", f"127.0.0.1:{world.closed_ports[0]}", "--quiet")
    outcome(code, err, rejected=True, naming="cannot reach")
    assert studies(world.tmp / "l.db")[0] == set()


# ---- budgets ------------------------------------------------------------------------------------------

BUDGETS = st.one_of(st.sampled_from(["smoke", "cpu", "paper", "SMOKE", "smoke ", "", "none", "null"]), ARG_TEXT)


@given(budget=BUDGETS, preset=st.sampled_from(["fig3-critics", "calibration"]))
@examples(200)
def test_budgets(world, budget, preset):
    spec = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())
    known = set(spec.get("budgets") or {})
    code, _, err = mimax(world, "spaces", "show", preset, f"--budget={budget}", "--json")
    outcome(code, err, rejected=budget not in known)


# ---- database URLs ------------------------------------------------------------------------------------

def _inside(path: str, root: Path) -> bool:
    try:
        p = Path(path).expanduser()
    except RuntimeError:  # ~user of no such user: the path is taken as written
        p = Path(path)
    p = (Path.cwd() / p) if not p.is_absolute() else p
    return os.path.realpath(p).startswith(str(root) + os.sep)


@st.composite
def database_urls(draw, world) -> str:
    port = draw(st.sampled_from(world.closed_ports))
    url = draw(st.one_of(
        st.sampled_from([
            "", "sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///file:x.db", "sqlite+foo:///x.db",
            "mysql://u:p@127.0.0.1/db", "postgresql+asyncpg://u@127.0.0.1/db", "postgresql+psycopg2://u@127.0.0.1/d",
            f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db", f"postgresql://u@127.0.0.1:{port}/db",
            f"postgresql+psycopg://u@127.0.0.1:{port}/", f"postgresql+psycopg://u@[::1]:{port}/db",
            "postgresql+psycopg://u@127.0.0.1:99999/db", "postgresql+psycopg://u@127.0.0.1:x/db",
            f"sqlite:///{world.tmp}", f"sqlite:///{world.config}", f"sqlite:///{world.tmp}/no/such/dir/x.db",
            "sqlite:///dir.db/x.db", "notaurl", "://", "sqlite:////", "oracle://", "sqlite:///x.db?mode=ro",
            "sqlite:///x.db?uri=true", "sqlite:///garbage.db",
        ]),
        st.builds(lambda p: f"sqlite:///{p}", ARG_TEXT),
        st.builds(lambda s, r: f"{s}{r}", st.sampled_from(["sqlite:///", "postgresql+psycopg://", "", "x://"]),
                  ARG_TEXT),
    ))
    # Stay on this machine: PostgreSQL only on a closed loopback port, SQLite only under the test's folder.
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.get_backend_name() == "postgresql":
        assume(parsed.host in LOOPBACK and parsed.port in world.closed_ports and not parsed.query)
    elif parsed.get_backend_name() == "sqlite" and parsed.database:
        assume(_inside(parsed.database, world.tmp))
    return url


@pytest.fixture(scope="module")
def odd_files(world):
    (world.tmp / "garbage.db").write_bytes(b"this is not a database\x00" * 50)
    (world.tmp / "dir.db").mkdir()


@given(data=st.data())
@examples(500)
def test_database_urls(world, odd_files, data):
    url = data.draw(database_urls(world))
    command = data.draw(st.sampled_from(["list", "status", "resume", "launch", "db"]))
    if command in ("launch", "db") and _new_sqlite_file(url):
        command = "list"  # migrating a new file costs a second: launch and upgrade on the rest
    name = f"url{world.inputs}"
    argv = {"list": ["list"], "status": ["status", name], "resume": ["resume", name, "--quiet"],
            "db": ["db", "upgrade"],
            "launch": ["launch", world.space, "--name", name, "--quiet", "--cpus-per-trial=5"]}[command]
    code, out, err = mimax(world, *argv, f"--db={url}")
    rejected = outcome(code, err)
    assert "secret" not in err + out  # the password is never shown
    if command in ("status", "resume"):
        assert rejected  # no such study anywhere
    if command == "launch":
        assert rejected  # a bad URL, or else 5 CPUs a trial on a 4-CPU cluster
        if "--cpus-per-trial" in err:  # the URL was fine: the database was opened and left without a study
            assert name not in studies(_sqlite_path(url))[0]


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    return Path(parsed.database) if parsed.drivername.startswith("sqlite") and parsed.database else None


def _new_sqlite_file(url: str) -> bool:
    path = _sqlite_path(url)
    return path is not None and not path.exists()


# ---- trial configs (mimax train FILE) -----------------------------------------------------------------

VALID_CONFIGS = [
    SMALL_CONFIG,
    yaml.safe_load((ROOT / "examples" / "train-mnist.yaml").read_text()),
    {**SMALL_CONFIG, "eval": {"every": 10, "probe": [{"name": "sklearn", "C": 10.0}, {"name": "torch",
                                                                                       "max_iter": 50}]}},
    {**SMALL_CONFIG, "train": {"steps": 20, "batch_size": 16, "lr": 0.001, "mode": "adversarial"},
     "critic": None, "estimator": None, "adversarial": {"warmup": 5, "classifier_steps": 2}},
]


@given(data=st.data())
@examples(1800)
def test_trial_configs(world, data):
    valid = data.draw(st.sampled_from(VALID_CONFIGS))
    m = data.draw(mutation(valid))
    path = world.tmp / f"mutated{data.draw(st.sampled_from(['.yaml', '.json', '']))}"  # not world.config
    path.write_text(data.draw(document(m.tree)), encoding="utf-8")
    code, _, err = mimax(world, "train", path)
    if m.kind == "unknown_key" or _has_nonfinite(m.tree):
        outcome(code, err, rejected=True, naming=m.key)
    else:
        outcome(code, err)


@given(text=RANDOM_FILE)
@examples(700)
def test_random_config_files(world, text):
    path = world.tmp / "random.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    code, _, err = mimax(world, "train", path)
    outcome(code, err)


OVERRIDE = st.one_of(
    st.builds(lambda k, v: f"{k}={v}",
              st.sampled_from(["train.lr", "train.steps", "seed", "encoder.name", "encoder.hidden", "eval.probe",
                               "critic", "train", "eval.probe.name", "data.name", "x_new", "train.x_new",
                               "encoder.name.sub", "..", "a..b", "", "=", "seed.x"]),
              st.one_of(st.sampled_from(["nan", ".nan", ".inf", "-.inf", "1e999", "true", "null", "[1, 2]",
                                         "{a: 1}", "3e-4", "1e-3", "-1", "0", "999999999999", "mlp", "resnet",
                                         "'quoted", "[", "&a", "*b", "!!binary x", ""]), ARG_TEXT)),
    ARG_TEXT,
)


@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=3))
@examples(1200)
def test_set_overrides(world, overrides):
    code, _, err = mimax(world, "train", world.config, *(f"--set={o}" for o in overrides))
    outcome(code, err)


# ---- search spaces ------------------------------------------------------------------------------------

VALID_SPACES = [yaml.safe_load(p.read_text()) for p in
                [TEST_SPACES / "tiny-grid.yaml", TEST_SPACES / "tiny-random.yaml", PRESETS / "fig3-critics.yaml",
                 PRESETS / "calibration.yaml"]]  # the quick ones to check: explore takes 0.3 s


@given(data=st.data())
@examples(650)
def test_search_spaces(world, data):
    valid = data.draw(st.sampled_from(VALID_SPACES))
    m = data.draw(mutation(valid))
    path = world.tmp / "space.yaml"
    path.write_text(data.draw(document(m.tree)), encoding="utf-8")
    code, _, err = mimax(world, "spaces", "validate", path)
    if m.kind == "unknown_key" and m.path not in (("params",), ("budgets",)):  # those two map names the user picks
        outcome(code, err, rejected=True, naming=m.key)
    elif _has_nonfinite(m.tree) and m.path[:1] != ("base",):  # budgets and params may override base
        outcome(code, err, rejected=True)
    else:
        outcome(code, err)


@given(data=st.data())
@examples(200)
def test_launching_corrupted_spaces_leaves_nothing_half_made(world, data):
    db = world.tmp / "spaces.db"
    m = data.draw(mutation(data.draw(st.sampled_from(VALID_SPACES[:2]))))
    path = world.tmp / "launch-space.yaml"
    path.write_text(data.draw(document(m.tree)), encoding="utf-8")
    taken = not world.may_create("spaces")  # then any space that passes is refused for its name
    name = "tiny-grid-0" if taken else f"sp{world.inputs}"
    if taken and name not in studies(db)[0]:
        assert mimax(world, "launch", world.space, "--name", name, "--db", f"sqlite:///{db}", "--quiet")[0] == 0
    before = studies(db)
    code, _, err = mimax(world, "launch", path, "--name", name, "--db", f"sqlite:///{db}", "--quiet")
    rejected = outcome(code, err, rejected=True if taken else None)
    whole(before, studies(db), None if rejected else name)


@given(text=RANDOM_FILE)
@examples(400)
def test_random_space_files(world, text):
    path = world.tmp / "random-space.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    code, _, err = mimax(world, "spaces", "validate", path)
    outcome(code, err)


# ---- any command line ---------------------------------------------------------------------------------

COMMANDS = [["launch"], ["resume"], ["status"], ["list"], ["db", "upgrade"], ["spaces", "show"],
            ["spaces", "validate"], ["train"], []]  # not spaces list: it checks every preset (0.5 s)
TOKENS = st.one_of(
    st.sampled_from(["--name", "--db", "--budget", "--address", "--cpus-per-trial", "--gpus-per-trial", "--pack",
                     "--max-concurrent", "--scheduler", "--add-trials", "--json", "--quiet", "--set", "--results-dir",
                     "fig3-critics", "explore", "-", "--", "--n", "-x", "9" * 5000, "-1", "1e999"]),
    ARG_TEXT,
)


@given(command=st.sampled_from(COMMANDS), rest=st.lists(TOKENS, max_size=6))
@examples(500)
def test_any_command_line(world, command, rest):
    db = world.tmp / "argv.db"
    before = studies(db)
    argv = [*command, *rest]
    if command and command[0] in ("launch", "resume", "status", "list", "db"):
        argv += ["--db", f"sqlite:///{db}"]  # never the default ./mimax.db of whatever folder
    code, out, err = mimax(world, *argv)
    rejected = outcome(code, err)
    if rejected:
        whole(before, studies(db), None)


# ---- PostgreSQL: refusals after the database is opened leave no study there either -------------------

@pytest.fixture(scope="module")
def pg_url():
    """A fresh database on the test server (127.0.0.1:5432, as tests/study/conftest.py), dropped after."""
    import uuid

    import psycopg
    from psycopg import sql
    from requires import require

    host, port = os.environ.get("MIMAX_TEST_PG_HOST", "127.0.0.1"), int(os.environ.get("MIMAX_TEST_PG_PORT", "5432"))
    user = os.environ.get("MIMAX_TEST_PG_USER", "postgres")
    try:
        admin = psycopg.connect(host=host, port=port, user=user, dbname="postgres", connect_timeout=5, autocommit=True)
    except psycopg.Error:
        admin = None
    require(admin is not None, f"a PostgreSQL server at {host}:{port} (user {user})")
    name = f"mimax_inputs_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def pg_studies(url: str) -> tuple[set[str], set[str]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return ({r[0] for r in conn.execute(text("SELECT name FROM mimax_studies"))},
                    {r[0] for r in conn.execute(text("SELECT study_name FROM studies"))})
    finally:
        engine.dispose()


@given(data=st.data())
@examples(40)
def test_postgresql_refusals_leave_no_study(world, pg_url, data):
    if not world.launches.get("pg"):  # once: a study whose name is then taken
        world.launches["pg"] = 1
        assert mimax(world, "launch", world.space, "--name", "pg-taken", "--db", pg_url, "--quiet")[0] == 0
    name = data.draw(st.one_of(st.just("pg-taken"), STUDY_NAMES, st.just(f"pg{world.inputs}")))
    extra = data.draw(st.sampled_from([[], ["--cpus-per-trial=5"], ["--gpus-per-trial=1"], ["--budget=nope"],
                                       [f"--address=127.0.0.1:{world.closed_ports[0]}"]]))
    if name_ok(name) and name != "pg-taken" and not extra:
        extra = ["--cpus-per-trial=5"]  # every input here is one to refuse (each launch costs ~1 s)
    before = pg_studies(pg_url)
    code, _, err = mimax(world, "launch", world.space, f"--name={name}", "--db", pg_url, "--quiet", *extra)
    outcome(code, err, rejected=True)
    whole(before, pg_studies(pg_url), None)


# ---- paths: --checkpoint of mimax train, --results-dir of launch --------------------------------------

@given(data=st.data())
@examples(400)
def test_paths(world, data):
    path = data.draw(st.one_of(
        st.sampled_from(["", ".", "/", str(world.tmp), str(world.config), f"{world.config}/x", "/nonexistent/x.pt",
                         "~", "x.pt", "sub/x.pt", "a" * 300, "/" + "a/" * 2000]),
        ARG_TEXT))
    if data.draw(st.booleans()):
        code, _, err = mimax(world, "train", world.config, f"--checkpoint={path}")
        rejected = outcome(code, err)
        if rejected:
            assert err.startswith(f"{PREFIX}--checkpoint: "), err
        else:  # it reached the trainer: a file there can be read, or one can be made (and removed again)
            assert not os.path.isdir(path) and os.path.isdir(os.path.dirname(os.path.abspath(path)))
            if not os.path.exists(path) and _inside(path, world.tmp):  # write nowhere else
                Path(path).touch()
                os.remove(path)
    else:  # a budget the space lacks is refused right after the results folder is checked
        code, _, err = mimax(world, "launch", world.space, "--name", "paths", f"--results-dir={path}",
                             "--budget=nope", "--db", f"sqlite:///{world.tmp / 'paths.db'}")
        outcome(code, err, rejected=True)
        assert err.startswith(f"{PREFIX}--results-dir: ") or "nope" in err, err
        assert not (world.tmp / "paths.db").exists()


# ---- claims files (mimax verify) and the analysis commands' study names -------------------------------

PAPER_CLAIMS = yaml.safe_load((ROOT / "mimax" / "analysis" / "claims" / "paper.yaml").read_text())


@pytest.fixture(scope="module")
def empty_db(world) -> str:
    """A mimax database with no study in it."""
    url = f"sqlite:///{world.tmp / 'empty.db'}"
    assert mimax(world, "db", "upgrade", "--db", url)[0] == 0
    return url


@given(data=st.data())
@examples(500)
def test_claims_files(world, empty_db, data):
    """A claims file is refused for its own faults or else for the study it names (the database has
    none): one line either way."""
    claims = dict(PAPER_CLAIMS, claims=data.draw(st.lists(st.sampled_from(PAPER_CLAIMS["claims"]), min_size=1,
                                                           max_size=3, unique_by=lambda c: c["id"])))
    m = data.draw(mutation(claims))
    path = world.tmp / "claims.yaml"
    path.write_text(data.draw(document(m.tree)), encoding="utf-8")
    code, _, err = mimax(world, "verify", path, "--db", empty_db, "--n-boot=100")
    fixed = m.kind == "unknown_key" and m.path[-1:] != ("where",)  # where: factors, known to studies only
    outcome(code, err, rejected=True, naming=m.key if fixed else None)


@given(command=st.sampled_from([["analyze"], ["export", "--out=exported"], ["compare"], ["status"], ["resume"]]),
       name=STUDY_NAMES)
@examples(300)
def test_study_names_of_the_other_commands(world, empty_db, command, name):
    code, _, err = mimax(world, *command, f"--db={empty_db}", "--", name)
    outcome(code, err, rejected=True)
    assert not (world.tmp / "exported").exists()


# ---- bytes: what an old editor, a download or the wrong file leaves on disk (issue 25) ----------------
# Every file mimax reads (a config, a space, a claims file, a plugin module a config names, an .npz of
# views) as bytes: invalid UTF-8, byte order marks, NUL bytes, deep nesting, truncation, files past the
# size limit and random bytes. The contract as everywhere: accepted, or one line and exit 2. Where the
# verdict is known independently it is checked too: CPython's own UTF-8 decoder says whether, and at which
# byte offset, a file is not UTF-8; YAML allows no NUL; nesting beyond MAX_DEPTH levels is refused; a file
# past the size limit is refused; a byte order mark and the encoding it names read as the UTF-8 file does.

MAX_DEPTH = 50  # as docs/TRAINING.md (Errors) states the limits
MAX_BYTES = 2**20
UTF8_BOM = b"\xef\xbb\xbf"
BOMS = {"utf-8": UTF8_BOM, "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-le": b"\xff\xfe\x00\x00",
        "utf-32-be": b"\x00\x00\xfe\xff"}
BAD_UTF8 = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80",
            b"\xfe", b"\xff", b"\xe9", b"caf\xe9"]
NOTE = "# written by hand: café ✓\n"  # non-ASCII text a valid file holds (a truncation may split it)


@dataclass
class ByteFile:
    data: bytes
    how: str
    depth: int = 0  # "deep": the nesting written


def _utf8_error_at(data: bytes) -> int | None:
    """Where CPython's decoder finds the first byte that is not UTF-8 (None: the bytes are UTF-8)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


@st.composite
def byte_file(draw, valid: bytes) -> ByteFile:
    how = draw(st.sampled_from(["random", "invalid-utf8", "invalid-utf8", "bom", "bom", "nul", "nul", "deep",
                                "deep", "truncated", "huge"]))
    at = draw(st.integers(0, len(valid)))
    if how == "random":
        return ByteFile(draw(st.binary(max_size=400)), how)
    if how == "invalid-utf8":
        return ByteFile(valid[:at] + draw(st.sampled_from(BAD_UTF8)) + valid[at:], how)
    if how == "bom":
        encoding = draw(st.sampled_from(sorted(BOMS)))
        body = valid if draw(st.integers(0, 4)) == 0 else valid.decode("utf-8").encode(encoding)  # 1 in 5 mismatched
        return ByteFile(BOMS[encoding] + body, f"bom-{encoding}" + ("-mismatched" if body is valid else ""))
    if how == "nul":
        return ByteFile(valid[:at] + b"\x00" + valid[at:], how)
    if how == "deep":
        depth = draw(st.one_of(st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3), st.integers(1, 300),
                               st.sampled_from([1000, 100_000])))
        opening, closing = draw(st.sampled_from([(b"[", b"]"), (b"{a: ", b"}"), (b"- ", b"")]))
        if opening == b"- ":
            data = b"".join(b"  " * i + b"-\n" for i in range(depth - 1)) + b"  " * (depth - 1) + b"- 1\n" \
                if depth < 1000 else b"- " * depth + b"1"
        else:
            data = opening * depth + (b"1" if opening == b"{a: " else b"") + closing * depth * draw(st.booleans())
        return ByteFile(data, how, depth)
    if how == "truncated":
        return ByteFile(valid[:at], how)
    size = draw(st.sampled_from([MAX_BYTES + 1, MAX_BYTES + 7, 3 * MAX_BYTES]))
    return ByteFile(valid + b"#" * (size - len(valid) - 1) + b"\n", how)


def _valid_bytes(text: str) -> bytes:
    return (NOTE + text).encode("utf-8")


BYTE_COMMANDS = ("train", "spaces validate", "launch", "verify", "plugin")


def _run_file(world: World, command: str, path: Path, db: Path, empty_db: str) -> tuple[int, str, str]:
    if command == "train":
        return mimax(world, "train", path)
    if command == "spaces validate":
        return mimax(world, "spaces", "validate", path)
    if command == "launch":  # a space that passes is refused for its 5 CPUs a trial, after the database opened
        return mimax(world, "launch", path, "--name", f"b{world.inputs}", "--db", f"sqlite:///{db}", "--quiet",
                     "--cpus-per-trial=5")
    return mimax(world, "verify", path, "--db", empty_db, "--n-boot=100")


@given(data=st.data())
@examples(2000)
def test_files_as_bytes(world, empty_db, data):
    command = data.draw(st.sampled_from(BYTE_COMMANDS))
    valid = {"train": yaml.safe_dump(SMALL_CONFIG, allow_unicode=True),
             "spaces validate": (TEST_SPACES / "tiny-grid.yaml").read_text(),
             "launch": (TEST_SPACES / "tiny-grid.yaml").read_text(),
             "verify": yaml.safe_dump(dict(PAPER_CLAIMS, claims=PAPER_CLAIMS["claims"][:1]), allow_unicode=True),
             "plugin": "import math\nX = 'café ✓'\n"}[command]
    file = data.draw(byte_file(_valid_bytes(valid)))
    db = world.tmp / "bytes.db"
    before = studies(db)
    if command == "plugin":  # a module a config names in plugins, holding these bytes
        import importlib

        module = f"mimax_fuzz_plugin_{world.inputs}"
        (world.tmp / f"{module}.py").write_bytes(file.data)
        importlib.invalidate_caches()
        path = world.tmp / "plugin-config.yaml"
        path.write_text(yaml.safe_dump({**SMALL_CONFIG, "plugins": [module]}))
        code, _, err = mimax(world, "train", path)
        (world.tmp / f"{module}.py").unlink()
        if outcome(code, err):
            assert "plugins[0]" in err and module in err, err
        return
    path = world.tmp / "bytes.yaml"
    path.write_bytes(file.data)
    code, _, err = _run_file(world, command, path, db, empty_db)
    rejected = outcome(code, err, rejected=True if command in ("launch", "verify") else None)
    bad_at = _utf8_error_at(file.data)
    if file.how == "huge":
        assert f"is larger than {MAX_BYTES:,} bytes" in err, err
    elif file.how.startswith("bom-") and not file.how.endswith("mismatched"):
        plain = world.tmp / "plain.yaml"  # the same text as UTF-8 without a BOM: the same answer
        plain.write_bytes(_valid_bytes(valid))
        code2, _, err2 = _run_file(world, command, plain, db, empty_db)
        assert (code, err.replace(str(path), "P")) == (code2, err2.replace(str(plain), "P")), (err, err2)
    elif bad_at is not None and not file.data.startswith(tuple(BOMS.values())):
        assert rejected and "is not UTF-8 text" in err and f"at offset {bad_at} " in err, (bad_at, err)
    elif file.how == "nul":
        assert rejected and "U+0000" in err, err
    elif file.how == "deep" and file.depth > MAX_DEPTH:
        assert rejected and "nested too deeply" in err, err
    whole(before, studies(db), None)  # nothing a file refused left a study behind


# ---- .npz files of views (data: {name: arrays, path: ...}) -------------------------------------------

def _npz_bytes() -> bytes:
    import numpy as np

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x1=rng.normal(size=(12, 5)), x2=rng.normal(size=(12, 5)), labels=rng.integers(0, 3, 12),
             split=np.where(np.arange(12) % 3 == 0, "test", "train"))
    return buf.getvalue()


@st.composite
def damaged_npz(draw) -> bytes:
    valid = _npz_bytes()
    how = draw(st.sampled_from(["truncate", "flip", "overwrite", "header", "random"]))
    if how == "random":
        return draw(st.binary(max_size=2000))
    at = draw(st.integers(0, len(valid) - 1))
    if how == "truncate":
        return valid[:at]
    if how == "flip":
        return valid[:at] + bytes([valid[at] ^ draw(st.integers(1, 255))]) + valid[at + 1:]
    if how == "overwrite":
        junk = draw(st.binary(min_size=1, max_size=64))
        return valid[:at] + junk + valid[at + len(junk):]
    # A header rewritten in place (same length, so the zip stays whole): a huge shape, a deep or bad literal.
    import zipfile

    start = valid.index(b"{'descr'")
    end = valid.index(b"}", start) + 1
    header = draw(st.sampled_from([b"{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999, 5), }",
                                   b"{'descr': " + b"[" * 40 + b"]" * 40 + b"}", b"{'descr': 'O', 'shape': (12,)}",
                                   b"not a python literal", b"{'descr': '<f8'}", b"(" * 60]))
    header = header[: end - start].ljust(end - start)
    out = valid[:start] + header + valid[end:]
    try:  # the member's CRC no longer matches: write the zip again around the new bytes, so numpy reads them
        fixed = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(out)) as src, zipfile.ZipFile(fixed, "w") as dst:
            for info in src.infolist():
                dst.writestr(info.filename, _member(out, info))
        return fixed.getvalue()
    except (zipfile.BadZipFile, ValueError):  # the header landed outside every member: keep the bytes as they are
        return out


def _member(raw: bytes, info) -> bytes:
    """A stored member's bytes as written, whatever its CRC says."""
    import struct

    off = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[off + 26: off + 30])
    start = off + 30 + name_len + extra_len
    return raw[start: start + info.compress_size]


@given(blob=damaged_npz())
@examples(300)
def test_npz_files_as_bytes(world, blob):
    from mimax.errors import ConfigError
    from mimax.trainables.data.arrays import Arrays

    path = world.tmp / f"views{world.inputs}.npz"  # a new name: the loader caches by path and stamp
    path.write_bytes(blob)
    config = world.tmp / "npz-config.yaml"
    config.write_text(yaml.safe_dump({**SMALL_CONFIG, "data": {"name": "arrays", "path": str(path)}}))
    code, _, err = mimax(world, "train", config)
    if outcome(code, err):
        assert err.startswith(f"{PREFIX}data.path: ") or err.startswith(f"{PREFIX}") and "data" in err, err
        return
    try:  # the headers passed: loading the arrays themselves is a ConfigError at data.path, or works
        Arrays(Arrays.Params(path=str(path)))
    except ConfigError as exc:
        assert exc.path == "data.path" and "\n" not in str(exc), exc

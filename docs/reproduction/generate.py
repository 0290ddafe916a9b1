#!/usr/bin/env python
"""Render docs/REPRODUCTION.md from its template and a results database: no number of ours is typed by hand.

    python docs/reproduction/generate.py [--db URL] [--check] [--partial]

The template (docs/reproduction/REPRODUCTION.md.in) is prose with placeholders; the language is documented
at its top and implemented in placeholders.py beside this file. Verdicts come from ``mimax verify paper``
(its Python API, the same defaults: 10,000 resamples, seed 0), tables from ``mimax analyze``'s frames.
The README's line on the reference database's size (between ``<!-- reference-db-size -->`` markers) is
written too.

--check renders to memory and exits 1, printing a unified diff, when a file on disk differs. Bad input (an
unknown placeholder, claim, finding, study or metric; a malformed placeholder; a missing database) is one
line on stderr and exit 2. --partial renders a database that lacks some of the claims' studies, or holds
them unfinished (while `make reproduce` is still running): their claims are left out of the verification
and every placeholder about them shows *pending*.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import placeholders  # noqa: E402  (beside this script)

from mimax.analysis.claims import load_claims, verify  # noqa: E402
from mimax.analysis.claims.cli import N_BOOT  # noqa: E402
from mimax.analysis.load import list_studies, load  # noqa: E402
from mimax.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "docs" / "reproduction" / "REPRODUCTION.md.in"
OUT = ROOT / "docs" / "REPRODUCTION.md"
README = ROOT / "README.md"
REFERENCE_DB = ROOT / "docs" / "reference" / "reproduce-cpu.db"
CLAIMS = "paper"
SIZE = re.compile(r"(<!-- reference-db-size -->)(.*?)(<!-- /reference-db-size -->)")


def shown(path: Path) -> str:
    """A path relative to the repository when inside it, so the output does not depend on the cwd."""
    path = Path(path).absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def db_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for a server database."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as e:
        raise ConfigError("--db", f"not a database URL: {e}") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).expanduser().absolute()


def size_text(url: str) -> str:
    path = db_file(url)
    if path is None:
        return "a server database (no file)"
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB ({size:,} bytes)"


def choice(ref, budgets, status: dict[str, str]) -> tuple[str, str]:
    """(the study a reference prefers, the study verify reads): for a preset, the first of its budgets
    (the claim's, else the file's list) whose study is in the database, a completed one preferred."""
    if ref.study:
        return ref.study, ref.study
    names = candidates(ref, budgets)
    present = [n for n in names if n in status]
    done = [n for n in present if status[n] == "completed"]
    return names[0], (done or present or names[:1])[0]  # none there: the page waits for the preferred one


def candidates(ref, budgets) -> list[str]:
    """The studies a preset reference may read, in order of preference (one per budget it names)."""
    if ref.study:
        return [ref.study]
    from mimax.search_spaces.spec import load_spec

    wanted = [ref.budget] if ref.budget else [budgets] if isinstance(budgets, str) else list(budgets or [])
    have = load_spec(ref.preset).budgets
    return [f"{ref.preset}-{b}" for b in wanted if b in have] or [f"{ref.preset}-{wanted[0]}"]


def preset_study(name: str) -> bool:
    """Whether ``name`` is <preset>-<budget> of a shipped preset and one of its budgets."""
    from mimax.search_spaces.spec import load_spec, preset_names

    return any(name.startswith(f"{p}-") and name[len(p) + 1:] in load_spec(p).budgets for p in preset_names())


def refs(claim) -> list:
    """The claim and the reference study of its ``versus``, those that name a study or preset."""
    return [r for r in (claim, claim.versus) if r is not None and (r.study or r.preset)]


def studies_of(claim, budgets, status: dict[str, str]) -> list[str]:
    """The studies a claim reads, as verify chooses them: its own, and the reference study of a ``versus``."""
    return [choice(ref, budgets, status)[1] for ref in refs(claim)]


@dataclass
class Source:
    """What the placeholders read: the database's studies (each loaded once) and the verdicts of the claims."""

    url: str
    partial: bool = False
    studies: list[dict] = field(default_factory=list)
    pending: dict[str, list[str]] = field(default_factory=dict)  # claim id -> its missing studies
    _loaded: dict = field(default_factory=dict)
    _looks: dict = field(default_factory=dict)  # seeds -> the verification at that look

    def __post_init__(self):
        path = db_file(self.url)
        if path is not None and path.is_file():
            wal = Path(f"{path}-wal")
            if wal.is_file() and wal.stat().st_size:
                raise ConfigError(shown(path), f"{wal.name} holds {wal.stat().st_size:,} bytes not yet in the file, "
                                               f"so a copy of the file would not be what is rendered: let the writer "
                                               f"finish, or run sqlite3 {shown(path)} 'PRAGMA wal_checkpoint(TRUNCATE)'")
        self.studies = list_studies(self.url)
        self.claims_file, self.source = load_claims(CLAIMS)
        # with --partial a study still running is pending too: its numbers would change under the page
        self.status = {s["name"]: s["status"] for s in self.studies}
        present = {s["name"] for s in self.studies if not self.partial or s["status"] == "completed"}
        keep = []
        for claim in self.claims_file.claims:
            missing = [s for s in studies_of(claim, self.claims_file.budget, self.status) if s not in present]
            if missing and self.partial:
                self.pending[claim.id] = missing
            else:
                keep.append(claim)
        self._claims = self.claims_file.model_copy(update={"claims": keep})
        self.verification = verify(self._claims, self.source, self.url, n_boot=N_BOOT, seed=0)
        self._verdicts = {d.claim.id: d for d in self.verification.verdicts}

    def verification_at(self, seeds: int):
        """The verification that reads only the seeds below ``seeds``: mimax decide's look at that many."""
        if seeds not in self._looks:
            self._looks[seeds] = verify(self._claims, self.source, self.url, n_boot=N_BOOT, seed=0, seeds=seeds)
        return self._looks[seeds]

    # ---- studies ----------------------------------------------------------------------------------------

    def data(self, name: str):
        if name not in self._loaded:
            if name in self.awaited or (self.partial and name not in self.status and preset_study(name)):
                raise placeholders.Pending  # a study make reproduce runs that is not there yet
            try:
                self._loaded[name] = load(self.url, name)
            except ConfigError as e:
                raise placeholders.PlaceholderError(e.message) from None
        return self._loaded[name]

    @property
    def awaited(self) -> list[str]:
        """The studies that pending claims read and, with --partial, every study a claim may read (one
        per budget of its list) that is not finished: their placeholders wait for them even while the
        claims read another budget's study."""
        unfinished = set()
        if self.partial:  # any study a claim may read that is not finished yet
            unfinished = {n for c in self.claims_file.claims for ref in refs(c)
                          for n in candidates(ref, self.claims_file.budget) if self.status.get(n) != "completed"}
        return sorted({s for missing in self.pending.values() for s in missing} | unfinished)

    def waiting(self) -> list[tuple[str, str, str, list[str]]]:
        """(preferred study, its state, the completed study read instead or "", the claims) for each study
        a claim prefers that is not completed in the database (a paper-steps study absent or running)."""
        out: dict[str, tuple] = {}
        for claim in self.claims_file.claims:
            for ref in refs(claim):
                preferred, chosen = choice(ref, self.claims_file.budget, self.status)
                state = self.status.get(preferred, "absent")
                if state == "completed":
                    continue
                instead = chosen if chosen != preferred and self.status.get(chosen) == "completed" else ""
                row = out.setdefault(preferred, (preferred, state, instead, []))
                if claim.id not in row[3]:
                    row[3].append(claim.id)
        return list(out.values())

    # ---- claims and findings -------------------------------------------------------------------------------

    def claim(self, cid: str):
        for claim in self.claims_file.claims:
            if claim.id == cid:
                return claim
        raise placeholders.unknown("claim", cid, [c.id for c in self.claims_file.claims], f"in {self.source}")

    def verdict(self, cid: str):
        """The claim's Verdict; None while it is pending."""
        return self._verdicts.get(cid)

    def findings(self) -> list[dict]:
        """``Verification.findings()`` in the claims file's order, each with ``pending``: its claims left out.
        While some of its claims are pending, a finding's verdicts are *pending* unless they fail already."""
        verified = {f["finding"]: f for f in self.verification.findings()}
        out = []
        for name in dict.fromkeys(c.finding for c in self.claims_file.claims):
            waiting = [c.id for c in self.claims_file.claims if c.finding == name and c.id in self.pending]
            f = verified.get(name) or {"finding": name, "verdict": "", "claims": [], "probes": {}, "note": "",
                                       "holds": 0, "fails": 0, "inconclusive": 0}
            if waiting:
                unless_failed = lambda v: v if v == "fails" else placeholders.PENDING  # noqa: E731
                f = {**f, "verdict": unless_failed(f["verdict"]), "note": "",
                     "probes": {lab: unless_failed(v) for lab, v in f["probes"].items()}}
            out.append({**f, "pending": waiting})
        return out

    def finding(self, name: str) -> dict:
        for f in self.findings():
            if f["finding"] == name:
                return f
        names = [f["finding"] for f in self.findings()]
        raise placeholders.PlaceholderError(f"unknown finding {name!r} in {self.source} (findings: {', '.join(names)})")

    def probe_labels(self) -> list[str]:
        labels = {lab for f in self.verification.findings() for lab in f["probes"]}
        known = list(placeholders.PROBES)  # the paper's probe first
        return sorted(labels, key=lambda lab: (known.index(lab) if lab in known else len(known), lab))

    # ---- provenance ----------------------------------------------------------------------------------------

    def provenance(self) -> str:
        path = db_file(self.url)
        where = f"`{shown(path)}`, SQLite, {size_text(self.url)}" if path else "a server database"
        rows = []
        for s in self.studies:
            envs = [] if s["name"] in self.awaited else self.data(s["name"]).environment
            sessions = "; ".join(_session(e) for e in envs) or "none recorded"
            machines = "; ".join(dict.fromkeys(_machine(e) for e in envs)) or "–"
            done = s["trial_counts"].get("completed", 0)
            rows.append([s["name"], s["budget"], s["status"], f"{done} / {sum(s['trial_counts'].values())}", sessions, machines])
        lines = [f"The database: {where}, {len(self.studies)} "
                 f"{'study' if len(self.studies) == 1 else 'studies'}.", "",
                 placeholders.table(["study", "budget", "status", "trials completed / total",
                                     "sessions: git commit, start (UTC)", "machine"], rows)]
        if self.awaited:
            lines += ["", f"Not in the database yet, or not finished (*pending*): {', '.join(self.awaited)}."]
        return "\n".join(lines)


def _machine(env: dict) -> str:
    cores = (env.get("extra") or {}).get("cpu_count")
    return ", ".join(x for x in (env.get("cpu") or "CPU unknown", cores and f"{cores} cores", env.get("gpu")) if x)


def _session(env: dict) -> str:
    commit = env.get("git_commit")
    short = f"`{commit[:12]}{'+dirty' if commit.endswith('+dirty') else ''}`" if commit else "commit unknown"
    when = env.get("recorded_at")
    return f"{env['session']}: {short}" + (f", {when:%Y-%m-%d %H:%M}" if when is not None else "")


# ---- the files ------------------------------------------------------------------------------------------------


def outputs(args) -> dict[Path, str]:
    """Each file this run writes and its new text."""
    template = Path(args.template)
    if not template.is_file():
        raise ConfigError(shown(template), "no such template")
    text = template.read_text(encoding="utf-8")
    placeholders.check(text, shown(template))
    source = Source(args.db, partial=args.partial)
    if source.awaited:
        print(f"generate.py: pending (not in the database yet, or not finished): {', '.join(source.awaited)}",
              file=sys.stderr)
    out = {Path(args.out): placeholders.render(text, source, shown(template))}
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        if not SIZE.search(text):
            raise ConfigError(shown(readme), "no <!-- reference-db-size -->...<!-- /reference-db-size --> markers "
                                             "for the database's size (or pass --no-readme)")
        out[readme] = SIZE.sub(lambda m: m.group(1) + size_text(args.db) + m.group(3), text)
    return out


def check(files: dict[Path, str]) -> int:
    stale = []
    for path, new in files.items():
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old != new:
            stale.append(path)
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       f"{shown(path)} (on disk)", f"{shown(path)} (rendered)"))
    for path in stale:
        print(f"generate.py: {shown(path)} differs from what the database renders; run "
              f"python docs/reproduction/generate.py --db URL", file=sys.stderr)
    return 1 if stale else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default=f"sqlite:///{REFERENCE_DB}",
                   help=f"the results database (default: sqlite:///{shown(REFERENCE_DB)})")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff when a file differs")
    p.add_argument("--partial", action="store_true",
                   help="render a database that lacks some studies: their claims and placeholders are pending")
    p.add_argument("--template", default=str(TEMPLATE), help=f"default {shown(TEMPLATE)}")
    p.add_argument("--out", default=str(OUT), help=f"default {shown(OUT)}")
    p.add_argument("--readme", default=str(README), help=f"whose size line to update (default {shown(README)})")
    p.add_argument("--no-readme", dest="readme", action="store_const", const=None, help="leave the README alone")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        files = outputs(args)
    except ConfigError as e:
        print(f"generate.py: error: {e}", file=sys.stderr)
        return 2
    if args.check:
        return check(files)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(shown(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

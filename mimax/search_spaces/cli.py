"""``mimax spaces list | show NAME_OR_FILE [--budget B] [--json] | validate FILE``.

Bad input raises ConfigError; the main CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json

import yaml

from mimax.search_spaces.compile import Space
from mimax.search_spaces.presets import check_all_budgets, load_space
from mimax.search_spaces.spec import load_spec, preset_names


def register(subparsers) -> None:
    """Add the ``spaces`` command to the main CLI's subparsers."""
    p = subparsers.add_parser("spaces", help="list, show and validate search spaces",
                              description="Search spaces: the presets shipped with mimax, or your own YAML files.")
    sub = p.add_subparsers(dest="spaces_command", required=True, metavar="{list,show,validate}")

    q = sub.add_parser("list", help="the preset spaces: name, configurations, seeds, description")
    q.add_argument("--budget", help="count at this budget (default: each space's default budget)")
    q.add_argument("--json", action="store_true", help="print one JSON array")
    q.set_defaults(func=list_command)

    q = sub.add_parser("show", help="a space's settings and, for grid spaces, every trial config")
    q.add_argument("space", metavar="NAME_OR_FILE", help="a preset name or a space YAML file")
    q.add_argument("--budget", help="apply this budget (default: the space's default budget)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=show_command)

    q = sub.add_parser("validate", help="check a space file, every budget of it, against the trial validator")
    q.add_argument("file", metavar="FILE", help="a space YAML file (or a preset name)")
    q.set_defaults(func=validate_command)


def list_command(args: argparse.Namespace) -> int:
    spaces = {name: load_space(name, args.budget) for name in preset_names()}
    rows = [{"name": name, "description": space.description, "budget": space.budget, "n_configs": space.n_configs,
             "seeds": space.seeds, "sampler": space.sampler.name, "budgets": list(space.spec.budgets)}
            for name, space in spaces.items()]
    if args.json:
        print(json.dumps(rows))
        return 0
    header = ("NAME", "CONFIGS", "SEEDS", "BUDGET", "DESCRIPTION")
    table = [header] + [(r["name"], _count(r["n_configs"]), str(r["seeds"]), r["budget"] or "-", r["description"])
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def show_command(args: argparse.Namespace) -> int:
    space = load_space(args.space, args.budget)
    configs = space.enumerate()
    if args.json:
        print(json.dumps(show_record(space, configs), allow_nan=False))
        return 0
    print(_text(space, configs))
    return 0


def show_record(space: Space, configs: list[dict] | None) -> dict:
    """The ``show --json`` object: ``Space.to_dict()`` (the sampler as its name, sampler_seed and
    sampler_options), with n_configs, configs (null unless enumerable), budgets, source and fingerprint."""
    d = space.to_dict()
    sampler = d.pop("sampler")
    return {**d, "sampler": sampler["name"], "sampler_seed": sampler["seed"], "sampler_options": sampler["options"],
            "n_configs": space.n_configs, "configs": configs, "budgets": list(space.spec.budgets),
            "source": space.source, "fingerprint": space.fingerprint()}


def validate_command(args: argparse.Namespace) -> int:
    space = check_all_budgets(load_spec(args.file))
    n = space.n_configs
    print(f"ok: {space.name} ({n} configurations)" if n is not None else f"ok: {space.name} (sampled; no trial limit)")
    return 0


def _count(n: int | None) -> str:
    return "unlimited" if n is None else str(n)


def _param_line(key: str, spec: dict) -> str:
    kind = next(k for k in ("value", "choice", "grid", "int", "float") if k in spec)
    text = f"{kind} {json.dumps(spec[kind])}"
    if spec.get("log"):
        text += " log"
    if "step" in spec:
        text += f" step {spec['step']}"
    if "when" in spec:
        text += "  when " + ", ".join(f"{k} in {json.dumps(v)}" for k, v in spec["when"].items())
    return f"  {key:<22} {text}"


def _text(space: Space, configs: list[dict] | None) -> str:
    d = space.to_dict()
    budgets = ", ".join(space.spec.budgets) or "none"
    n = space.n_configs
    trials = "unlimited" if n is None else f"{n} x {space.seeds} seeds = {n * space.seeds} trials"
    objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in d["objectives"])
    lines = [
        f"{space.name}: {space.description}" if space.description else space.name,
        f"source:      {space.source}",
        f"budget:      {space.budget or '-'} (budgets: {budgets})",
        f"sampler:     {space.sampler.name} (seed {space.sampler.seed})",
        f"objectives:  {objectives}",
        f"configs:     {trials}",
        f"fingerprint: {space.fingerprint()[:16]}",
        "params:" if space.params else "params:      none (one configuration)",
    ]
    lines += [_param_line(k, v) for k, v in d["params"].items()]
    lines.append("base config:")
    lines += ["  " + line for line in yaml.safe_dump(d["base"], sort_keys=False).splitlines()]
    if configs is not None:
        lines.append(f"configurations ({len(configs)}):")
        for i, flat in enumerate(space.enumerate_params(), 1):
            desc = " ".join(f"{k}={v}" for k, v in flat.items()) or "(the base config)"
            lines.append(f"  {i:>3}. {desc}")
    return "\n".join(lines)

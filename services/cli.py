"""`switchyard`: one command for every operation, on click. `switchyard --help` lists them with their exit codes;
`switchyard COMMAND --help` describes each option. Commands whose module has its own argparse `main(argv)` pass
their arguments through to it, so their `--help` is that module's own."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import click

from services.stages import FUSED, PROCESSES

EXIT_CODES: Final = """\b
Exit codes:
  0   the work is done (a check found nothing wrong)
  1   the work failed: a check found problems, a service did not answer, a bench lost records
  2   usage error: an unknown command, option or value (click's and argparse's); also input a command
      cannot use: `topics` with an invalid topics/ file, `verify` without readable checkpoints or key,
      `replay` of a request with no audit record, `keys create` or `dead-letters --open` without their key
  3   `topics apply`: a change Kafka refuses (fewer partitions, a replication factor change)
  75  `run`: a stage's Kafka transaction is wedged; start the process again (EX_TEMPFAIL)
"""

Target = Callable[[list[str]], int]  # an argparse module's main(argv): its exit code
# the order `switchyard --help` lists the sections in
SECTIONS: Final = ("Run", "Set up", "Operate", "Audit", "Learning loop", "Measure", "Export")


class SectionedGroup(click.Group):
    """A group that lists its commands under headed sections, in SECTIONS order (unsectioned ones: "Commands")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections: dict[str, str] = {}

    def add_to(self, section: str, command: click.Command) -> None:
        self.add_command(command)
        self.sections[command.name or ""] = section

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            section = self.sections.get(name, "Commands")
            rows.setdefault(section, []).append((name, command.get_short_help_str(limit=formatter.width)))
        for section in [*SECTIONS, *sorted(set(rows) - set(SECTIONS))]:
            if section in rows:
                with formatter.section(section):
                    formatter.write_dl(rows[section])


def _finish(code: int) -> None:
    """Leave with `code`, both from the console script and under click's test runner."""
    click.get_current_context().exit(code)


@click.group(
    cls=SectionedGroup,
    epilog=EXIT_CODES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 118, "terminal_width": 118},
)
def switchyard() -> None:
    """Switchyard: the orchestration layer between retail POS clients and the models that answer them.

    Paths, ports and credentials come from SWITCHYARD_* environment variables (README, "Configuration")."""


class PassthroughCommand(click.Command):
    """A command that hands its arguments untouched (`--help` and `--` included) to an argparse `main(argv)`, so
    `switchyard NAME --help` is that module's own help."""

    def __init__(self, name: str, help_text: str, target: Target) -> None:
        super().__init__(name, help=help_text, short_help=help_text, add_help_option=False)
        self.target = target

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.params["arguments"] = list(args)
        return []

    def invoke(self, ctx: click.Context) -> None:
        ctx.exit(int(self.target(ctx.params["arguments"])))


def _passthrough(name: str, help_text: str, target: Target, group: click.Group, section: str = "") -> None:
    command = PassthroughCommand(name, help_text, target)
    if isinstance(group, SectionedGroup) and section:
        group.add_to(section, command)
    else:
        group.add_command(command)


def _module_main(module: str, *prefix: str) -> Target:
    """`module.main(prefix + argv)`, the module imported only when the command runs."""

    def call(argv: list[str]) -> int:
        main: Target = importlib.import_module(module).main
        return main([*prefix, *argv])

    return call


def _named_main(module: str, command: str) -> Target:
    """`module.main(command, argv)`: the modules that serve several commands by name."""

    def call(argv: list[str]) -> int:
        main: Callable[[str, list[str]], int] = importlib.import_module(module).main
        return main(command, argv)

    return call


# -- commands of our own -----------------------------------------------------------------------------------------


@click.command(
    "run",
    short_help="run one process (a stage, the telemetry writer, ...) until SIGTERM",
    help=f"Run PROCESS in the foreground until SIGTERM: {', '.join(PROCESSES)}, or `{FUSED}`: the five stages "
    "fused in one process (never beside the stage processes).",
)
@click.argument("process", type=click.Choice([*PROCESSES, FUSED]), metavar="PROCESS")
@click.option(
    "--replica", metavar="ID", help="replica id, unique per running copy (default: $SWITCHYARD_REPLICA or the host)"
)
@click.option("--http-port", type=int, metavar="PORT", help="port of /healthz and /metrics (0 picks a free one)")
def run_command(process: str, replica: str | None, http_port: int | None) -> None:
    from services.stages import run_process

    run_process(process, replica=replica, http_port=http_port)


@click.group("config", cls=SectionedGroup, short_help="check routes/, policies/, providers/ and topics/ together")
def config_group() -> None:
    """The operator's configuration: routes/, policies/, providers/ and topics/."""


@config_group.command("check")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a Switchyard tree (the repository, an imported bundle): its routes/, policies/, providers/, topics/ and "
    "schemas/  [default: the paths the settings name]",
)
@click.option("--routes", type=click.Path(path_type=Path), help="the route table file (overrides --root's)")
@click.option("--policies", type=click.Path(path_type=Path), help="the policy directory or file (overrides --root's)")
@click.option("--providers", type=click.Path(path_type=Path), help="the providers.yaml (overrides --root's)")
@click.option("--topics", type=click.Path(path_type=Path), help="the topic definitions directory (overrides --root's)")
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object (problems included)")
def config_check(
    root: Path | None,
    routes: Path | None,
    policies: Path | None,
    providers: Path | None,
    topics: Path | None,
    as_json: bool,
) -> None:
    """Validate routes/, policies/, providers/ and topics/ together: each by its own loader, then the references
    across them (a route's provider, a fallback's route, a rule's intent, a PII audience, a topic a process uses).
    Prints one line per problem on stderr and exits 1 when there is any."""
    from services.config_check import ConfigPaths, check_config, configured_paths

    paths = ConfigPaths.under(root) if root is not None else configured_paths()
    paths = ConfigPaths(
        routes=routes or paths.routes,
        policies=policies or paths.policies,
        providers=providers or paths.providers,
        topics=topics or paths.topics,
        schemas=paths.schemas,
    )
    report = check_config(paths)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    elif report.ok:
        click.echo(report.summary())
    else:
        for problem in report.problems:
            click.echo(problem, err=True)
    _finish(0 if report.ok else 1)


@click.group(
    "schemas", cls=SectionedGroup, short_help="the wire contract: check, gen-models, asyncapi, release, register"
)
def schemas_group() -> None:
    """The wire contract in schemas/: compatibility, generated models, AsyncAPI, releases, registration."""


@schemas_group.command("check")
def schemas_check() -> None:
    """Check every schema against its history (backward and forward), and that services/wire/models.py and
    schemas/asyncapi.yaml are what the generators write. Exits 1 at the first check that fails."""
    from services.infra import asyncapi
    from services.wire import compatibility, gen_models

    checks: list[Callable[[], int]] = [
        lambda: compatibility.main([]),
        lambda: gen_models.main(["--check"]),
        lambda: asyncapi.main(["--check"]),
    ]
    for check in checks:
        code = check()
        if code:
            _finish(code)
    _finish(0)


@schemas_group.command("gen-models")
@click.option("--check", is_flag=True, help="write nothing; exit 1 when services/wire/models.py is out of date")
def schemas_gen_models(check: bool) -> None:
    """Generate services/wire/models.py (the pydantic models) from schemas/."""
    from services.wire import gen_models

    _finish(gen_models.main(["--check"] if check else []))


@schemas_group.command("release")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--dir",
    "schemas_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="the schemas directory  [default: schemas/]",
)
def schemas_release(names: tuple[str, ...], schemas_dir: Path | None) -> None:
    """Keep the current version of each record in NAMES (Request, or switchyard.Request) in history before you
    change it: the compatibility check then holds every later change against it."""
    from services.wire import schema_registry

    _finish(schema_registry.main(["release", *names, *(["--dir", str(schemas_dir)] if schemas_dir else [])]))


@schemas_group.command("register")
@click.option("--url", help="the schema registry  [default: $SWITCHYARD_SCHEMA_REGISTRY_URL]")
def schemas_register(url: str | None) -> None:
    """Register the current schemas with a Confluent-compatible schema registry (<topic>-value subjects) and print
    each record's id, one JSON object a line."""
    from services.wire import registry_client

    _finish(registry_client.main(["register", *(["--url", url] if url else [])]))


_passthrough(
    "asyncapi",
    "regenerate (or --check) schemas/asyncapi.yaml from topics/ and schemas/",
    _module_main("services.infra.asyncapi"),
    schemas_group,
)

# -- commands served by a module's own argparse main, by section --------------------------------------------------

RUN: Final[dict[str, tuple[str, Target]]] = {
    "dashboard": ("serve the live monitoring dashboard (ClickHouse over HTTP)", _module_main("services.dashboard.app")),
    "demo": (
        "the end-to-end demo: the chain answering a mix of POS requests",
        _module_main("services.tools.demo.chain"),
    ),
}
SET_UP: Final[dict[str, tuple[str, Target]]] = {
    "topics": (
        "reconcile the broker with topics/: plan (print the diff) or apply",
        _module_main("services.infra.topics"),
    ),
    "migrate": (
        "apply infra/clickhouse/NNN_*.sql not applied yet (idempotent)",
        _module_main("services.infra.clickhouse", "migrate"),
    ),
    "seed-stores": ("publish stores, staff, stock and customers to ref.*", _module_main("services.tools.seed")),
    "knowledge": (
        "the knowledge base in Weaviate: ingest the markdown sources, search it",
        _module_main("services.stitcher.knowledge"),
    ),
    "deploy-manifests": (
        "write or check infra/deploy (compose, Kubernetes) against the process registry",
        _module_main("services.export.deploy"),
    ),
    "scrape-config": (
        "write or check infra/grafana/prometheus.yml against the process registry",
        _module_main("services.export.scrape"),
    ),
    "validate-manifests": (
        "validate infra/deploy: compose checks, or kubeconform on the Kubernetes manifests",
        _module_main("services.export.validate"),
    ),
}
OPERATE: Final[dict[str, tuple[str, Target]]] = {
    "query": (
        "run one SQL statement against ClickHouse, print the result",
        _module_main("services.infra.clickhouse", "query"),
    ),
    "ping": ("exit 0 when ClickHouse answers /ping", _module_main("services.infra.clickhouse", "ping")),
    "keys": (
        "the HTTP gateway's API keys: create (bound to a store), revoke, list",
        _module_main("services.gateway.keys"),
    ),
    "staff": (
        "who may approve or reject, for which stores: add, deactivate, list",
        _module_main("services.approvals.staff"),
    ),
    "vault": ("the PII vault's key ring: status (key ids), rotate", _module_main("services.shared.vault")),
    "erase": (
        "erase a customer's (or a request's) PII: vault entries tombstoned, raw-text rows deleted, audit intact",
        _module_main("services.governor.erase"),
    ),
    "dead-letters": ("dead letters in ClickHouse (--open: in clear)", _module_main("services.telemetry.dead_letters")),
    "work-split": (
        "the orchestration-work split, measured, next to the reference",
        _module_main("services.dashboard.queries"),
    ),
    "approve": (
        "a manager approves an escalated request: it runs through the chain again, released",
        _named_main("services.approvals.cli", "approve"),
    ),
    "reject": (
        "a manager rejects an escalated request: the held answer stands",
        _named_main("services.approvals.cli", "reject"),
    ),
}
AUDIT: Final[dict[str, tuple[str, Target]]] = {
    "verify": (
        "walk the audit hash chains, report the first broken link and any signed checkpoint they fail",
        _module_main("services.auditor.verify"),
    ),
    "replay": (
        "re-run a request's routing, context and policy decisions from its record",
        _module_main("services.auditor.replay"),
    ),
    "export-audit": ("audit records of a period as JSON lines or Parquet", _module_main("services.auditor.export")),
    "export-checkpoints": (
        "add the auditor's signed chain heads (audit.checkpoints) to a JSON lines file kept offline",
        _module_main("services.auditor.checkpoint_log"),
    ),
}
LEARNING: Final[dict[str, tuple[str, Target]]] = {
    name: (text, _named_main("services.learning.cli", name))
    for name, text in {
        "feedback": "rate, correct, reroute or close an escalation (to the feedback topic)",
        "export-training": "a versioned training set (JSONL chat + Parquet + card) from ClickHouse",
        "train": "train, evaluate and register a custom model from an exported set",
        "shadow": "start / stop / report a candidate answering in shadow on live traffic",
        "promote": "route intents to a candidate that beats the incumbent on eval and in shadow",
        "rollback": "undo the latest promotion (--if-degraded: only when its live metrics degraded)",
        "models": "the model registry: models, data sets, evaluations, what is deployed",
    }.items()
} | {
    "demo-learning": (
        "the learning loop end to end: traffic, reviews, export, train, shadow, promote; before/after table",
        _module_main("services.tools.demo.learning"),
    ),
}
MEASURE: Final[dict[str, tuple[str, Target]]] = {
    name: (text, _module_main(module))
    for name, (module, text) in {
        "bench": ("services.tools.bench.chain", "full-chain throughput and latency, as JSON"),
        "bench-gateway": (
            "services.tools.bench.gateway",
            "the HTTP gateway + fused chain beside the stub asked directly",
        ),
        "bench-runtime": (
            "services.tools.bench.runtime",
            "the stream runtime alone: five relay stages, per-hop latency",
        ),
        "bench-stitcher": ("services.tools.bench.stitcher", "stitcher records/s and stitch time with the real tables"),
        "bench-governor": ("services.tools.bench.governor", "governor records/s and added latency in process, as JSON"),
        "bench-answerer": (
            "services.tools.bench.answerer",
            "answerer output-guard answers/s and added latency, as JSON",
        ),
        "bench-audit": (
            "services.tools.bench.auditor",
            "audit write throughput: records/s through decide and the insert",
        ),
        "chaos": ("services.tools.chaos", "each fault under steady load: one table"),
        "soak": ("services.tools.soak", "steady load; RSS and open files of every process each minute"),
        "eval-retrieval": ("services.tools.eval.retrieval", "knowledge-base retrieval on the labelled questions"),
        "eval-answers": ("services.tools.eval.answers", "right answers on the labelled POS set, per intent and route"),
        "eval-governance": (
            "services.tools.eval.governance",
            "governance on the labelled set: PII, toxicity, injection, rules",
        ),
    }.items()
}
EXPORT: Final[dict[str, tuple[str, Target]]] = {
    name: (text, _module_main("services.export.cli", name))
    for name, text in {
        "export": "write the system as one hash-signed bundle (dir and .tar.gz)",
        "import": "check a bundle and lay it out in a fresh directory",
        "equivalence": "replay fixed requests through two trees: same routes, verdicts and workflow answers?",
    }.items()
}

switchyard.add_to("Run", run_command)
switchyard.add_to("Set up", config_group)
switchyard.add_to("Set up", schemas_group)
for _section, _commands in {
    "Run": RUN,
    "Set up": SET_UP,
    "Operate": OPERATE,
    "Audit": AUDIT,
    "Learning loop": LEARNING,
    "Measure": MEASURE,
    "Export": EXPORT,
}.items():
    for _name, (_help, _target) in _commands.items():
        _passthrough(_name, _help, _target, switchyard, _section)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: runs `switchyard ARGV` (default: sys.argv[1:]) and returns its exit code."""
    try:
        result = switchyard.main(
            args=list(sys.argv[1:] if argv is None else argv), prog_name="switchyard", standalone_mode=False
        )
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except SystemExit as leaving:  # an argparse module's --help or usage error, or a message to leave with
        if isinstance(leaving.code, int) or leaving.code is None:
            return leaving.code or 0
        click.echo(leaving.code, err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

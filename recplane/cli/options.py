"""What every cluster-facing command shares: its options, exit codes, errors and output.

The options are declared once here as `Annotated` types, so `-n`, `--context`,
`--kubeconfig` and `-o` read and behave the same in every verb. Machine output
(`-o json|yaml|name`) goes to stdout as exactly the object(s) and nothing else;
tables, progress and errors are for people (tables to stdout, the rest to
stderr).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
import yaml
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from recplane.api import API_VERSION, GROUP, Kind, PrinterColumn
from recplane.api.resource import ResourceError

# ------------------------------------------------------------------ exit codes


class ExitCode(IntEnum):
    """Exit codes of the cluster verbs; scripts may rely on them."""

    OK = 0
    FAILED = 1  # the resource failed, the input is invalid, or the server refused the change
    USAGE = 2  # bad flags or arguments (click's own code, kept so it means only that)
    NOT_FOUND = 3
    CLUSTER = 4  # cluster unreachable, CRDs not installed, forbidden or unauthorized
    TIMEOUT = 5


EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failed or invalid, 2 bad usage, 3 not found, "
    "4 cluster unreachable / CRDs missing / forbidden, 5 timed out."
)


class CliError(Exception):
    """The one error type of the cluster verbs: a one-line message for people and an exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


err_console = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a CliError (or a locally refused resource) into one `error:` line on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            fail(exc)
        except ResourceError as exc:
            fail(CliError(str(exc), ExitCode.FAILED))
        except KeyboardInterrupt:
            # Ctrl-C ends `logs -f` and `wait`: quietly, with the shell's usual code.
            raise typer.Exit(130) from None

    return wrapper


def fail(exc: CliError) -> NoReturn:
    err_console.print(Text("error: ", style="bold red") + Text(exc.message))
    raise typer.Exit(int(exc.code))


# ------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float) -> float:
    """Seconds in a Go-style duration as kubectl takes it: `90s`, `5m`, `1h30m`; a bare number is seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise typer.BadParameter(f"{value!r} is not a duration: use e.g. 30s, 5m or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """`300` -> `5m`, `90` -> `1m30s`: the inverse of parse_duration for messages."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


# --------------------------------------------------------------------- options


class OutputFormat(str, Enum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    name = "name"


Namespace = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        help="Namespace to use.",
        show_default="the kubeconfig context's namespace, else default",
    ),
]
AllNamespaces = Annotated[bool, typer.Option("--all-namespaces", "-A", help="List across all namespaces.")]
Context = Annotated[
    str | None,
    typer.Option("--context", help="kubeconfig context to use.", show_default="its current-context"),
]
Kubeconfig = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubeconfig file.",
        show_default="$KUBECONFIG, else ~/.kube/config, else the pod's service account",
        dir_okay=False,
    ),
]
Output = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        case_sensitive=False,
        help="table (default), wide (more columns), json or yaml (the objects, nothing else) or name.",
    ),
]


def timeout_option(default: str) -> Any:
    """`--timeout DURATION`; pass the same default to the parameter as `parse_duration(default)`."""
    return typer.Option(
        "--timeout",
        parser=parse_duration,
        metavar="DURATION",
        show_default=default,
        help="Give up after this long, e.g. 90s, 5m, 1h.",
    )


@dataclass(frozen=True)
class Target:
    """Where a command talks to: the kubeconfig/context and namespace flags as given (None = default)."""

    namespace: str | None = None
    context: str | None = None
    kubeconfig: Path | None = None


# ----------------------------------------------------------- machine output


def strip_server_noise(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without metadata.managedFields, as `kubectl get -o yaml` shows it."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def as_list(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as one `v1 List`, the shape kubectl prints for them."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {"resourceVersion": ""}}


def qualified_name(obj: dict[str, Any]) -> str:
    """`trainjob.recplane.io/feed-deepfm`: the name kubectl prints for `-o name` and in its messages."""
    group = str(obj.get("apiVersion", API_VERSION)).split("/")[0]
    return f"{str(obj.get('kind', '')).lower()}.{group}/{obj.get('metadata', {}).get('name', '')}"


def print_objects(objects: Sequence[dict[str, Any]], fmt: OutputFormat, single: bool = False) -> None:
    """Print exactly the objects in a machine format: one object when `single`, else a List.

    Nothing else is written to stdout, so `recplane get tj -o json | jq` works.
    """
    cleaned = [strip_server_noise(o) for o in objects]
    if fmt is OutputFormat.name:
        sys.stdout.write("".join(qualified_name(o) + "\n" for o in cleaned))
        return
    doc: dict[str, Any] = cleaned[0] if single and len(cleaned) == 1 else as_list(cleaned)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif fmt is OutputFormat.yaml:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    else:
        raise ValueError(f"{fmt.value} is not a machine output format")


# --------------------------------------------------------------------- tables

out_console = Console(highlight=False)

_SEGMENT = re.compile(r"""\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_]+)\s*==\s*["']([^"']*)["']\)\]""")


def json_path(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPaths of printer columns: `.a.b`, `[0]` and `[?(@.type=="Ready")]`.

    Returns None when any step is missing, as kubectl leaves such a cell empty.
    """
    pos = 0
    current = obj
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if not m:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[pos:]!r}")
        pos = m.end()
        key, index, filter_key, filter_value = m.groups()
        if key is not None:
            current = current.get(key) if isinstance(current, dict) else None
        elif index is not None:
            current = current[int(index)] if isinstance(current, list) and int(index) < len(current) else None
        else:
            matches = (
                [i for i in current if isinstance(i, dict) and str(i.get(filter_key)) == filter_value]
                if isinstance(current, list)
                else []
            )
            current = matches[0] if matches else None
        if current is None:
            return None
    return current


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API server (or a datetime) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_age(then: Any, now: datetime | None = None) -> str:
    """How long ago, rounded the way kubectl rounds ages: 45s, 3m20s, 15m, 2h5m, 3d4h, 2y10d."""
    when = parse_time(then)
    if when is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < -1:
        return "<invalid>"
    seconds = max(seconds, 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400

    def two(big: int, big_unit: str, small: int, small_unit: str) -> str:
        return f"{big}{big_unit}" if small == 0 else f"{big}{big_unit}{small}{small_unit}"

    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return two(minutes, "m", seconds % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return two(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return two(days, "d", hours % 24, "h")
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return two(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def format_cell(value: Any, column_type: str = "string", now: datetime | None = None) -> str:
    """One table cell: dates as ages, numbers short, nothing as an empty cell."""
    if value is None:
        return ""
    if column_type == "date":
        return human_age(value, now)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def columns_for(kind: Kind, wide: bool = False) -> list[PrinterColumn]:
    """The kind's printer columns (the CRD's), priority-0 ones unless `wide`."""
    return [c for c in kind.columns if wide or c.priority == 0]


def resource_rows(
    kind: Kind,
    objects: Iterable[dict[str, Any]],
    *,
    wide: bool = False,
    with_namespace: bool = False,
    qualify: bool = False,
    now: datetime | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of `get` for objects of one kind, from the kind's printer columns."""
    columns = columns_for(kind, wide)
    headers = (["NAMESPACE"] if with_namespace else []) + ["NAME"] + [c.name.upper() for c in columns]
    rows = []
    for obj in objects:
        meta = obj.get("metadata", {})
        name = f"{kind.singular}.{GROUP}/{meta.get('name', '')}" if qualify else str(meta.get("name", ""))
        cells = [format_cell(json_path(obj, c.json_path), c.type, now) for c in columns]
        rows.append(([str(meta.get("namespace", ""))] if with_namespace else []) + [name, *cells])
    return headers, rows


_STATUS_STYLES = {"True": "green", "False": "red", "Failed": "red", "Ready": "green", "Succeeded": "green"}


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A kubectl-looking rich table: no borders, bold headers, status words coloured on a terminal."""
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 3, 0, 0))
    for h in headers:
        t.add_column(h, no_wrap=True, overflow="ignore")
    for row in rows:
        t.add_row(*(Text(cell, style=_STATUS_STYLES.get(cell, "")) for cell in row))
    return t


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], console: Console | None = None) -> None:
    print_natural(table(headers, rows), console)


def print_natural(renderable: RenderableType, console: Console | None = None) -> None:
    """Print at the renderable's natural width, never squeezed or wrapped to the terminal (as kubectl
    prints), and without the trailing blanks rich pads lines with."""
    con = console or out_console
    width = Measurement.get(con, con.options.update(max_width=1_000_000), renderable).maximum
    for segments in con.render_lines(renderable, con.options.update_width(max(width, 1)), pad=False):
        line = Text()
        for seg in segments:
            line.append(seg.text, seg.style)
        line.rstrip()
        con.print(line, soft_wrap=True)

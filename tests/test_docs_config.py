"""docs/configuration.md cannot drift from the loaders, nor docs/operations.md from the CLI.

- Every key each section of AGENCY.toml and FEDERATION.toml accepts is in the
  reference, and every key the reference lists is accepted. What a section
  accepts is asked of the loaders themselves: a file with one unknown key in
  that section is refused with the list of keys it knows.
- Every ```toml example in both pages loads with the project's own loader.
- Where a key is a dataclass field of the same name, the default given is its default.
- Every `fedsql ...` command line in both pages parses with the CLI's parser,
  and the systemd unit passes `systemd-analyze verify` where systemd is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedsql.cli import build_parser
from fedsql.config import load_federation
from fedsql.connectors.config import load_agency
from fedsql.connectors.registry import BACKENDS, COMMON
from fedsql.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
OPERATIONS = ROOT / "docs" / "operations.md"
UNIT = ROOT / "deploy" / "fedsql-connector.service"

_CONN = '[connector]\nname = "a"\nlisten = "127.0.0.1:1"\n'
_INSECURE = "insecure = true\n"
_BACKEND = '[backend]\nkind = "duckdb"\npath = "a.duckdb"\n'
_TLS = (
    'allowed_coordinators = ["c"]\naudit_log = "a.jsonl"\n'
    '[connector.tls]\ncert = "a.crt"\nkey = "a.key"\nclient_ca = "ca.crt"\n'
)
_FED = '[[connector]]\nname = "a"\naddress = "127.0.0.1:1"\ninsecure = true\n'
_Z = "zz_unknown = 1\n"

# section heading in the reference -> (loader, a file with one unknown key in that section)
PROBES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "AGENCY.toml": (load_agency, _Z + _CONN + _INSECURE + _BACKEND),
    "[connector]": (load_agency, _CONN + _INSECURE + _Z + _BACKEND),
    "[connector.tls]": (load_agency, _CONN + _TLS + _Z + _BACKEND),
    "[limits]": (load_agency, _CONN + _INSECURE + _BACKEND + "[limits]\n" + _Z),
    "[[grant]]": (
        load_agency,
        _CONN + _INSECURE + _BACKEND + '[[grant]]\ntable = "t"\nroles = ["r"]\n' + _Z,
    ),
    "[[mask]]": (
        load_agency,
        _CONN + _INSECURE + _BACKEND + '[[mask]]\ntable = "t"\ncolumn = "c"\nrule = "null"\n' + _Z,
    ),
    "[[row_filter]]": (
        load_agency,
        _CONN + _INSECURE + _BACKEND + '[[row_filter]]\ntable = "t"\nwhere = "a > 1"\n' + _Z,
    ),
    "FEDERATION.toml": (load_federation, _Z + _FED),
    "[[connector]]": (load_federation, _FED + _Z),
    "[[connector]] [connector.tls]": (
        load_federation,
        '[[connector]]\nname = "a"\naddress = "127.0.0.1:1"\n'
        '[connector.tls]\nca = "ca.crt"\ncert = "c.crt"\nkey = "c.key"\n' + _Z,
    ),
    "[coordinator]": (load_federation, _FED + "[coordinator]\n" + _Z),
    "[coordinator.tls]": (
        load_federation,
        _FED + '[coordinator.tls]\nca = "ca.crt"\ncert = "c.crt"\nkey = "c.key"\n' + _Z,
    ),
    "[user.NAME]": (load_federation, _FED + "[user.alice]\n" + _Z),
    "[service]": (load_federation, _FED + "[service]\n" + _Z),
    "[service.tls]": (
        load_federation,
        _FED + '[service]\n[service.tls]\ncert = "s.crt"\nkey = "s.key"\n' + _Z,
    ),
}
for _kind in BACKENDS:
    _required = "".join(f'{k} = "x"\n' for k in BACKENDS[_kind].required)
    PROBES[f'[backend] kind = "{_kind}"'] = (
        load_agency,
        _CONN + _INSECURE + f'[backend]\nkind = "{_kind}"\n{_required}' + _Z,
    )
# A coordinator's own [[mask]]/[[row_filter]] are read by the same code as an agency's.
_KNOWN = re.compile(r"(?:this version knows|known:|takes) ([\w, ]+)$")


def accepted(section: str, tmp: Path) -> set[str]:
    """The keys the loader accepts in ``section``, from its own refusal of an unknown one."""
    loader, text = PROBES[section]
    path = tmp / "probe.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        loader(path)
    m = _KNOWN.search(str(e.value))
    assert m, f"{section}: the refusal no longer lists the known keys: {e.value}"
    return set(m.group(1).split(", "))


def documented() -> dict[str, set[str]]:
    """Each ``### `SECTION` `` of the reference -> the keys its table lists."""
    out: dict[str, set[str]] = {}
    section = None
    for line in REFERENCE.read_text().splitlines():
        h = re.match(r"#{2,4} `(.+)`\s*$", line)
        if h:
            section = h.group(1)
            out.setdefault(section, set())
            continue
        row = re.match(r"\| `([a-z_]+)` \|", line)
        if row and section is not None:
            out[section].add(row.group(1))
    return out


def test_every_section_is_documented_with_exactly_its_keys(tmp_path: Path) -> None:
    doc = documented()
    for section in PROBES:
        assert section in doc, f"docs/configuration.md has no heading ### `{section}`"
        keys = accepted(section, tmp_path)
        if section.startswith("[backend]"):
            assert keys == set(COMMON) | set(BACKENDS[section.split('"')[1]].keys)
        assert doc[section] == keys, (
            f"{section}: undocumented {sorted(keys - doc[section])}, "
            f"documented but not accepted {sorted(doc[section] - keys)}"
        )
    tables = {section for section, keys in doc.items() if keys}  # "### `[backend]`" has none
    assert tables == set(PROBES), f"key tables no loader section has: {tables - set(PROBES)}"


def _toml_blocks(page: Path) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", page.read_text(), re.S)


@pytest.mark.parametrize("page", [REFERENCE, OPERATIONS], ids=lambda p: p.name)
def test_every_toml_example_loads(page: Path, tmp_path: Path) -> None:
    blocks = _toml_blocks(page)
    assert blocks, f"{page.name} has no TOML example"
    for i, block in enumerate(blocks):
        first = block.splitlines()[0]
        loader = {"# AGENCY.toml": load_agency, "# FEDERATION.toml": load_federation}.get(first)
        assert loader, (
            f"{page.name} block {i + 1}: begin it with # AGENCY.toml or # FEDERATION.toml"
        )
        path = tmp_path / f"example{i}.toml"
        path.write_text(block)
        (tmp_path / "alice.hash").write_text("scrypt$example\n")  # a password_hash_file
        loader(path)


def _commands(page: Path) -> list[str]:
    text = page.read_text()
    found = [
        ln.split(" #")[0]
        for block in re.findall(r"```(?:sh|console)\n(.*?)```", text, re.S)
        for ln in block.splitlines()
        if ln.startswith("fedsql ")
    ]
    found += re.findall(r"`(fedsql [^`]+)`", text)  # inline
    return [c.strip() for c in found]


@pytest.mark.parametrize("page", [REFERENCE, OPERATIONS], ids=lambda p: p.name)
def test_every_documented_command_parses(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = _commands(page)
    assert commands or page == REFERENCE
    for cmd in commands:
        argv = shlex.split(cmd.split(" | ")[0].split(" > ")[0])[1:]
        # A command named in prose (`fedsql serve`) must exist; one with arguments must parse.
        named = all(re.fullmatch(r"[a-z]+", a) for a in argv)
        try:
            parser.parse_args(argv + ["--help"] if named else argv)
        except SystemExit as e:
            if not (named and e.code == 0):
                pytest.fail(f"{page.name}: `{cmd}` does not parse: {capsys.readouterr().err}")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart's program exists: point it at this venv's.
    exe = Path(sys.executable).parent / "fedsql-connector"
    unit = tmp_path / UNIT.name
    text = UNIT.read_text()
    assert "ExecStart=/opt/fedsql/bin/fedsql-connector " in text
    unit.write_text(text.replace("/opt/fedsql/bin/fedsql-connector", str(exe)))
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [ln for ln in r.stderr.splitlines() if UNIT.name in ln]
    assert r.returncode == 0 and not problems, r.stderr


def test_containerfile_installs_what_exists() -> None:
    """The image installs an extra pyproject.toml declares and runs a script it installs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "deploy" / "Containerfile").read_text()
    extra = re.search(r"pip install [^\n]*'/src\[(\w+)\]'", text)
    assert extra and extra.group(1) in project["optional-dependencies"], extra
    entry = re.search(r'ENTRYPOINT \["([\w-]+)"\]', text)
    assert entry and entry.group(1) in project["scripts"], entry
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / copied).exists(), f"COPY {copied}: not in the repository"


def _defaults() -> dict[str, dict[str, str]]:
    """Each section of the reference -> key -> its default cell, as written."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in REFERENCE.read_text().splitlines():
        h = re.match(r"#{2,4} `(.+)`\s*$", line)
        if h:
            section = h.group(1)
        row = re.match(r"\| `([a-z_]+)` \| ([^|]+) \| ([^|]+) \|", line)
        if row:
            out.setdefault(section, {})[row.group(1)] = row.group(3).strip()
    return out


def test_documented_defaults_are_the_loaders_defaults() -> None:
    """Where a key is a field of the same name, the default the reference gives
    (``none``, or the first `value`) is the dataclass's."""
    import dataclasses
    import tomllib

    from fedsql.config import FederationConfig, ServiceConfig
    from fedsql.connectors.config import AgencyConfig, Limits
    from fedsql.connectors.postgres import PostgresOptions

    classes: dict[str, Any] = {
        "[connector]": AgencyConfig,
        "[limits]": Limits,
        "[coordinator]": FederationConfig,
        "[service]": ServiceConfig,
        '[backend] kind = "postgres"': PostgresOptions,
    }
    doc = _defaults()
    compared = 0
    for section, cls in classes.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, cell in doc[section].items():
            f = fields.get(key)
            if f is None or f.default is dataclasses.MISSING or cell.startswith("required"):
                continue
            if cell.startswith("none"):
                want: Any = None
            elif m := re.match(r"`([^`]+)`", cell):
                want = tomllib.loads(f"v = {m.group(1)}")["v"]
            else:
                continue
            got = f.default
            got = list(got) if isinstance(got, tuple) else got
            assert got == want, f"{section} {key}: documented default {cell!r}, loader's {got!r}"
            compared += 1
    assert compared >= 30, compared
    print(f"{compared} defaults compared")

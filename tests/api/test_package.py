"""`pip install .` from a clean clone into a fresh virtual environment gives a working CLI, demo and Python API.

How the test stays offline and fast, and still proves the package declares what it needs:
- The checkout's files as a clone has them (`git ls-files`: tracked and new, never build/, data/ or the .venv
  link) are copied to a scratch folder, and a wheel is built from there with this environment's setuptools
  (`--no-build-isolation`: no PyPI).
- A fresh venv (no --system-site-packages) gets, besides that wheel, only the distributions the wheel's own
  metadata asks for, transitively: their installed files are linked from this environment. pip then installs
  the wheel with `--no-index` and dependency checking ON, so a dependency missing from pyproject.toml fails the
  install, and an import of anything undeclared (boto3, moto) fails at run time in the venv.
- The demo talks only to loopback simulators.
"""

from __future__ import annotations

import json
import os
import shutil
import shlex
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("package")  # one wheel build and venv for the module


def _clean_clone(dest: Path) -> Path:
    """The files a clone of the working tree has: tracked plus new, not ignored; links (.venv) left out."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_symlink() or not src.is_file():
            continue  # .venv and node_modules are links to a shared install; deleted files are gone
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


def _closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the requirements need, transitively (markers and extras honoured)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), ("",)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        dist = metadata.distribution(req.name)
        found[name] = dist
        for sub in dist.requires or []:
            todo.append((Requirement(sub), ("", *req.extras)))
    return found


def _link_into(dist: metadata.Distribution, site: Path) -> None:
    base = Path(dist.locate_file(""))
    tops = {Path(f).parts[0] for f in dist.files or []} - {"..", "__pycache__"}
    for top in tops:
        target = site / top
        if not target.exists() and (base / top).exists():
            target.symlink_to(base / top)


def _run(args: list, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in args], check=False, capture_output=True, text=True, timeout=600,
                         **kw)
    assert res.returncode == 0, f"{args}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    import setuptools

    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.fail(f"setuptools {setuptools.__version__} cannot build the wheel offline (needs >= 77, with "
                    "bdist_wheel built in): run `make install`, which installs requirements-dev.txt's pin")
    tmp = tmp_path_factory.mktemp("package")
    clone = _clean_clone(tmp / "clone")
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", wheels, clone])
    [wheel] = wheels.glob("schemahub-*.whl")
    env_dir = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    py = env_dir / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip() for line in z.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if not (Requirement(r).marker and "extra" in str(Requirement(r).marker))]
    for dist in _closure(runtime).values():
        _link_into(dist, site)
    # Dependency checking on: a requirement not satisfied by the linked distributions fails here.
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-index", "--find-links", wheels,
          "schemahub"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEMAHUB_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "work"
    work.mkdir()
    return {"py": py, "bin": env_dir / "bin", "env": env, "cwd": work, "wheel": wheel, "requires": requires,
            "site": site}


def test_wheel_contains_the_mappings_and_declares_runtime_dependencies(venv):
    names = set(zipfile.ZipFile(venv["wheel"]).namelist())
    for name in ("product_ids_seed.yaml", "assets.yaml", "exchanges/coinbase.yaml", "exchanges/binance.yaml",
                 "exchanges/kraken.yaml", "exchanges/okx.yaml"):
        assert f"schemahub/mappings/{name}" in names
    assert "schemahub/sim/coinbase.py" in names  # the demo's simulators
    declared = {canonicalize_name(Requirement(r).name) for r in venv["requires"] if "extra" not in r}
    assert {"duckdb", "pyarrow", "pydantic", "pyyaml", "urllib3", "pytz"} <= declared
    assert "boto3" not in declared  # S3 only: the `aws` extra
    extras = {canonicalize_name(Requirement(r).name) for r in venv["requires"] if 'extra == "aws"' in r}
    assert "boto3" in extras


def test_installed_cli_demo_query_and_python_api_work_offline(venv):
    run = dict(env=venv["env"], cwd=venv["cwd"])
    exe = venv["bin"] / "schemahub"
    out = _run([exe, "--version"], **run).stdout
    assert out.strip() == "schemahub " + _run([venv["py"], "-c", "import importlib.metadata as m; "
                                                "print(m.version('schemahub'))"], **run).stdout.strip()
    # The package is the installed copy, nothing from the checkout, and undeclared packages are absent.
    probe = _run([venv["py"], "-c", "import schemahub, importlib.util as u; print(schemahub.__file__); "
                  "print(u.find_spec('boto3'), u.find_spec('moto'))"], **run).stdout.split()
    assert probe[0].startswith(str(venv["site"])) and probe[1:] == ["None", "None"]
    seed = _run([exe, "update-seed"], **run).stdout
    assert "coinbase\tBTC-USD\tBTC-USD" in seed and "binance\tBTC-USDT\tBTCUSDT" in seed

    since = (datetime.now(timezone.utc) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    demo = _run([exe, "demo", "--storage", "lake", "--since", since], **run).stdout
    assert "== stats" in demo and "coinbase BTC-USD: " in demo and " trades landed, up to " in demo
    # The demo's closing "try:" line is a command that works where it was printed (not the checkout's .venv/bin).
    [hint] = [line for line in demo.splitlines() if line.startswith("try: ")]
    tried = _run(shlex.split(hint.removeprefix("try: ")), **run).stdout
    assert "coinbase" in tried and "BTC-USD" in tried, tried

    got = _run([exe, "query", "--storage", "lake", "--format", "json",
                "SELECT exchange, count(*) AS n FROM trades GROUP BY ALL ORDER BY ALL"], **run).stdout
    rows = {r["exchange"]: r["n"] for r in json.loads(got)}
    assert set(rows) == {"binance", "coinbase", "kraken", "okx"} and all(n > 100 for n in rows.values())

    script = f"""
import json, decimal, pyarrow as pa, schemahub
lake = schemahub.open("lake")
t = lake.trades(exchange="coinbase", product="BTC-USD", start="{since}")
c = lake.candles("1m", exchange="coinbase", product="BTC-USD")
s = lake.stats()
n = lake.sql("SELECT count(*) FROM trades WHERE exchange = 'coinbase' AND product_id = 'BTC-USD'").fetchall()[0][0]
print(json.dumps({{"trades": t.num_rows, "price": str(t.schema.field("price").type),
    "time": str(t.schema.field("trade_time").type), "candles": c.num_rows,
    "volume": str(sum(c.column("volume").to_pylist(), decimal.Decimal(0))),
    "sum_size": str(sum(t.column("size").to_pylist(), decimal.Decimal(0))),
    "stats": s.num_rows, "sql": n}}))
"""
    res = json.loads(_run([venv["py"], "-c", script], **run).stdout)
    assert res["trades"] == res["sql"] > 100
    assert res["price"] == "decimal128(38, 12)" and res["time"] == "timestamp[us, tz=UTC]"
    assert res["candles"] >= 10 and res["volume"] == res["sum_size"]
    assert res["stats"] == 9


def test_s3_storage_without_the_aws_extra_says_what_to_install(venv):
    """The fresh environment has no boto3 (an extra): s3:// storage is one usage line naming the extra, not an
    internal error about botocore."""
    for args in (["query", "--storage", "s3://bucket/prefix", "SELECT 1"], ["stats", "--storage", "s3://bucket/x"]):
        res = subprocess.run([str(venv["bin"] / "schemahub"), *args], env=venv["env"], cwd=venv["cwd"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (res.returncode, res.stderr)
        assert "internal error" not in res.stderr and "[aws]" in res.stderr and "boto3" in res.stderr, res.stderr
    res = subprocess.run([str(venv["py"]), "-c", "import schemahub; schemahub.open('s3://bucket/prefix')"],
                         env=venv["env"], cwd=venv["cwd"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "UsageError" in res.stderr and "[aws]" in res.stderr, res.stderr

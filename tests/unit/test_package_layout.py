"""The package layout: an installed switchyard finds its data without a checkout, and the former module paths
that code outside the repository may import still give the same objects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import services.runtime.codec
import services.runtime.compatibility
import services.runtime.gen_models
import services.runtime.models
import services.runtime.schema_registry
from services import settings as settings_module
from services.wire import codec, compatibility, gen_models, models, schema_registry

DATA_FOLDERS = ("schemas", "topics", "routes", "policies", "providers", "knowledge", "infra/clickhouse")


def test_former_module_paths_give_the_same_objects_as_the_new_ones() -> None:
    assert services.runtime.models.Request is models.Request
    assert services.runtime.codec.AvroCodec is codec.AvroCodec
    assert services.runtime.schema_registry.SchemaRegistry is schema_registry.SchemaRegistry
    assert services.runtime.compatibility.main is compatibility.main
    assert services.runtime.gen_models.main is gen_models.main


def test_the_package_data_links_are_the_checkout_folders() -> None:
    assert settings_module.IN_CHECKOUT
    assert settings_module.DATA_ROOT == settings_module.REPO_ROOT
    package_data = Path(settings_module.__file__).resolve().parent / "_data"
    for folder in DATA_FOLDERS:
        assert (package_data / folder).resolve() == settings_module.REPO_ROOT / folder


def test_a_copy_of_the_package_outside_a_checkout_reads_its_own_data(tmp_path: Path) -> None:
    # what a wheel installs: the package with the linked data folders as files, and no checkout around it
    site = tmp_path / "site"
    shutil.copytree(
        Path(settings_module.__file__).resolve().parent,
        site / "services",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env = {name: value for name, value in env.items() if not name.startswith("SWITCHYARD_")}
    probe = (
        "from services.settings import IN_CHECKOUT, get_settings; s = get_settings(); "
        "print(IN_CHECKOUT, s.schemas_dir, s.var_dir, sep='\\n')"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    in_checkout, schemas_dir, var_dir = shown.stdout.splitlines()
    assert in_checkout == "False"
    assert Path(schemas_dir) == site / "services" / "_data" / "schemas"
    assert Path(var_dir) == workdir / "var"
    checked = subprocess.run(
        [sys.executable, "-m", "services.cli", "config", "check"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("config ok:")

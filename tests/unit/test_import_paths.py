"""`switchyard import` refuses any manifest path that leaves the bundle or the target: '..', absolute paths and
symbolic links, before a byte is read or written (issue 18: `x/../../TOP/f` landed outside the target)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from services.export.bundle import FORMAT, HASH_FILE, MANIFEST
from services.export.importer import BundleRefused, import_bundle, unsafe_path


def bundle_with(root: Path, files: dict[str, bytes], listed: list[str] | None = None) -> Path:
    """A bundle folder holding `files`, whose manifest lists `listed` (default: the files), signed by hash."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    entries = [
        {"path": p, "sha256": hashlib.sha256(files.get(p, b"")).hexdigest(), "section": "runtime"}
        for p in (listed if listed is not None else list(files))
    ]
    manifest = json.dumps({"format": FORMAT, "files": entries, "models": {}}).encode()
    (root / MANIFEST).write_bytes(manifest)
    (root / HASH_FILE).write_text(f"{hashlib.sha256(manifest).hexdigest()}  {MANIFEST}\n")
    return root


@pytest.mark.parametrize(
    "path",
    ["x/../../TOP/f", "../outside", "/etc/passwd", "a/./b", "a//b", "a\\..\\b", "", "x/.."],
)
def test_a_path_that_could_leave_the_bundle_is_refused_by_name(tmp_path: Path, path: str) -> None:
    problem = unsafe_path(tmp_path, path)
    assert problem is not None and repr(path) in problem


def test_an_ordinary_nested_path_is_safe(tmp_path: Path) -> None:
    assert unsafe_path(tmp_path, "services/router/stage.py") is None


def test_importing_a_manifest_that_climbs_out_writes_nothing_outside_the_target(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path / "bundle", {"x/f": b"payload"}, listed=["x/../../TOP/f"])
    target = tmp_path / "deep" / "target"
    with pytest.raises(BundleRefused) as refused:
        import_bundle(bundle, target)
    assert "unsafe path 'x/../../TOP/f'" in str(refused.value)
    assert not (tmp_path / "TOP").exists() and not (tmp_path / "deep" / "TOP").exists()


def test_a_symbolic_link_in_the_bundle_is_refused_even_to_a_file_inside_it(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    bundle = bundle_with(tmp_path / "bundle", {"real.txt": b"ok"})
    (bundle / "link").symlink_to(outside)
    assert unsafe_path(bundle, "link") == "unsafe path 'link': link is a symbolic link"
    (bundle / "dir").symlink_to(tmp_path)
    assert unsafe_path(bundle, "dir/secret.txt") == "unsafe path 'dir/secret.txt': dir is a symbolic link"

"""Put compiled bytecode into the functions' zip.

`chalice package` ships source only. Lambda unpacks the zip on a read-only
file system, where Python cannot write __pycache__: every new container
compiles every module it imports (ours, psycopg, botocore...), at every cold
start. The bytecode is compiled here with the interpreter the template's
runtime names, as unchecked-hash .pyc files (valid whatever the files'
times once unpacked), and added beside each module.

    python -m deploy.bytecode dist/deployment.zip dist/sam.yaml
"""

from __future__ import annotations

import compileall
import os
import py_compile
import re
import sys
import tempfile
import zipfile
from pathlib import Path


def runtime(template: Path) -> str:
    """The functions' runtime in the SAM template (all three share it)."""
    found = set(re.findall(r"Runtime: (python\d+\.\d+)", template.read_text()))
    if len(found) != 1:
        raise SystemExit(f"{template}: expected one Python runtime, found {sorted(found) or 'none'}")
    return found.pop()


def add_bytecode(package: Path, template: Path) -> int:
    """Compile every module of the zip and write the zip again with the
    bytecode; how many modules were compiled."""
    wanted = runtime(template)
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if wanted != here:
        raise SystemExit(f"the template's runtime is {wanted} but this is {here}: its bytecode would not load there")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with zipfile.ZipFile(package) as source:
            infos = source.infolist()
            source.extractall(root)
        compileall.compile_dir(root, quiet=2, workers=os.cpu_count() or 1,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        known = {info.filename for info in infos}
        compiled = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.pyc")
                          if p.relative_to(root).as_posix() not in known)
        rebuilt = package.with_suffix(".tmp")
        with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as target:
            for info in infos:
                target.writestr(info, (root / info.filename).read_bytes() if not info.is_dir() else b"")
            for name in compiled:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(info, (root / name).read_bytes())
        rebuilt.replace(package)
    return len(compiled)


def main(argv: list[str]) -> int:
    package = Path(argv[0] if argv else "dist/deployment.zip")
    template = Path(argv[1] if len(argv) > 1 else package.parent / "sam.yaml")
    count = add_bytecode(package, template)
    print(f"{package}: bytecode of {count} modules added ({package.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Generate the Python code for protos/ into gateway/api/, or check that it is current.

    python scripts/gen_protos.py          # regenerate
    python scripts/gen_protos.py --check  # exit 1 if regenerating would change anything

protoc writes absolute imports (``from onecard.v1 import common_pb2``); we rewrite them to the
package they live in (``gateway.api.onecard.v1``) so no sys.path trick is needed.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "gateway" / "api"
_IMPORT = re.compile(r"^from onecard\.v1 import ", re.MULTILINE)
_PACKAGE_INITS = ("", "onecard", "onecard/v1")


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        path.write_text(_IMPORT.sub("from gateway.api.onecard.v1 import ", path.read_text()))
    for pkg in _PACKAGE_INITS:
        init = out / pkg / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text('"""Generated from protos/ by scripts/gen_protos.py. Do not edit."""\n')


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        fresh = _tree(fresh_root)
        current = _tree(OUT_ROOT) if OUT_ROOT.exists() else {}
        if args.check:
            if fresh == current:
                print("generated code is current")
                return 0
            for name in sorted(set(fresh) | set(current)):
                if fresh.get(name) != current.get(name):
                    diff = difflib.unified_diff(
                        current.get(name, "").splitlines(),
                        fresh.get(name, "").splitlines(),
                        f"committed/{name}",
                        f"regenerated/{name}",
                        lineterm="",
                    )
                    print("\n".join(list(diff)[:40]))
            print("generated code is stale: run python scripts/gen_protos.py", file=sys.stderr)
            return 1
        for name in set(current) - set(fresh):
            (OUT_ROOT / name).unlink()
        for name, text in fresh.items():
            target = OUT_ROOT / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        print(f"wrote {len(fresh)} files under {OUT_ROOT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

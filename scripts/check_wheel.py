"""Check that a built wheel carries what the app needs at run time besides Python code."""

from __future__ import annotations

import sys
import zipfile

REQUIRED_PREFIXES = {
    "migrations": "django_stability/migrations/0001_initial.py",
    "templates": "django_stability/templates/django_stability/",
    "static files": "django_stability/static/django_stability/",
    "Lua scripts": "django_stability/store/lua/rate_limit.lua",
    "cache Lua scripts": "django_stability/cache/lua/read.lua",
    "py.typed": "django_stability/py.typed",
}


def main(path: str) -> int:
    names = zipfile.ZipFile(path).namelist()
    missing = [
        what
        for what, prefix in REQUIRED_PREFIXES.items()
        if not any(name.startswith(prefix) for name in names)
    ]
    if missing:
        print(f"{path} lacks: {', '.join(missing)}", file=sys.stderr)
        return 1
    leaked = [name for name in names if name.startswith(("tests/", "example_project/"))]
    if leaked:
        print(f"{path} carries files that are not the app: {leaked[:5]}", file=sys.stderr)
        return 1
    print(f"wheel ok: {path} ({len(names)} files, with migrations, templates, static, Lua)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

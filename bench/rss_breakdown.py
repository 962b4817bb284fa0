"""Where a process's resident memory goes: /proc/PID/smaps grouped by what is mapped (issue #16, defect 6).

    python bench/rss_breakdown.py PID [--top 15]

Groups: each shared library by name (libtorch_cpu.so, ...), files mapped from disk (weights), the
anonymous heap (`[heap]` + anonymous mappings: Python objects, torch tensors allocated by malloc),
thread stacks. Prints MiB per group, largest first, and the total (equal to VmRSS up to rounding).
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
BIG_KIB = 16 * 1024


def breakdown(pid: int) -> Counter[str]:
    """Resident KiB by mapping group."""
    groups: Counter[str] = Counter()
    name, path = "anonymous", ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if _HEADER.match(line):
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) > 5 else ""
            name = _group(path)
        elif line.startswith("Size:") and not path and int(line.split()[1]) >= BIG_KIB:
            # one large anonymous mapping = one large tensor (malloc mmaps big blocks): e.g. the KV cache
            name = f"anonymous mapping of {int(line.split()[1]) / 1024:.0f} MiB (one large tensor)"
        elif line.startswith("Rss:"):
            groups[name] += int(line.split()[1])
    return groups


def _group(path: str) -> str:
    if not path:
        return "anonymous (malloc arenas, tensors, Python objects)"
    if path in ("[heap]",):
        return "[heap] (brk: small allocations)"
    if path.startswith("[stack"):
        return "[stack]"
    if path.startswith("["):
        return path
    base = Path(path).name
    if ".so" in base:
        return f"lib {base}"
    return f"file {base}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pid", type=int)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    groups = breakdown(args.pid)
    total = sum(groups.values())
    for name, kib in groups.most_common(args.top):
        print(f"{kib / 1024:9.1f} MiB  {name}")
    rest = total - sum(k for _, k in groups.most_common(args.top))
    print(f"{rest / 1024:9.1f} MiB  (other mappings)\n{total / 1024:9.1f} MiB  total RSS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

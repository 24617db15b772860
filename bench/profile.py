"""Summarise the collapsed stacks that `python -m bench --profile DIR` records with py-spy:
`python -m bench.profile DIR [--top N]`.

For each `<process>.txt` it prints where the samples end (self time by package, then by
function), the service's own functions by inclusive time, and the library calls the
service makes by inclusive time, each as a share of the process's samples. The bench
records with `--gil`, so the shares are of the time a thread held the GIL: Python CPU.
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SERVICE_PACKAGES = ("core", "outbox", "service", "workers")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def package(self) -> str:
        head = self.file.split("/", 1)[0]
        return head.removesuffix(".py") if head else "?"

    def __str__(self) -> str:
        return f"{self.function} ({self.file})"


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "")
    return Frame(match["function"], match["file"])


@dataclass
class Profile:
    samples: int
    self_by_package: Counter[str]
    self_by_function: Counter[str]
    inclusive_service: Counter[str]
    inclusive_library: Counter[str]


def load(path: Path) -> Profile:
    """Read py-spy's raw (collapsed) format: `frame;frame;... count` per line."""
    profile = Profile(0, Counter(), Counter(), Counter(), Counter())
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(text) for text in stack.split(";")]
        leaf = frames[-1]
        profile.samples += count
        profile.self_by_package[leaf.package] += count
        profile.self_by_function[str(leaf)] += count
        for name in {str(f) for f in frames if f.package in SERVICE_PACKAGES}:
            profile.inclusive_service[name] += count
        for name in _entry_points(frames):
            profile.inclusive_library[name] += count
    return profile


def _entry_points(frames: list[Frame]) -> set[str]:
    """The first frame of each run of library frames called from the service's code: the
    library calls the service makes (`databases` execute, `httpx` send, ...)."""
    entries = set()
    for caller, callee in itertools.pairwise(frames):
        if caller.package in SERVICE_PACKAGES and callee.package not in SERVICE_PACKAGES:
            entries.add(str(callee))
    return entries


def _lines(title: str, counter: Counter[str], total: int, top: int) -> list[str]:
    lines = [f"  {title}"]
    for name, count in counter.most_common(top):
        lines.append(f"    {count / total * 100:5.1f}%  {name}")
    return lines


def summary(name: str, profile: Profile, *, top: int) -> str:
    total = max(profile.samples, 1)
    lines = [f"== {name}: {profile.samples} busy samples"]
    lines += _lines("self time by package", profile.self_by_package, total, top)
    lines += _lines("self time by function", profile.self_by_function, total, top)
    lines += _lines("service functions, inclusive", profile.inclusive_service, total, top)
    lines += _lines(
        "library calls from the service, inclusive", profile.inclusive_library, total, top
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for path in sorted(args.directory.glob("*.txt")):
        print(summary(path.stem, load(path), top=args.top))
        print()


if __name__ == "__main__":
    main()

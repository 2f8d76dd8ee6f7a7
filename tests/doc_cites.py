#!/usr/bin/env python3
"""Every citation of a documentation section by name in the sources names a section that exists.

Comments cite the docs as `docs/MODEL.md, "Section name"` (the name may wrap across comment
lines). A cite whose section was renamed or removed fails this test, naming file and line.
Usage: doc_cites.py ROOT
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
CITE = re.compile(r'docs/([A-Z]+\.md),\s*(?:(?:\*|#|//)\s*)?"([^"]{1,200})"', re.S)
CONT = re.compile(r'\s*\n\s*(?:\*|#|//)?\s*')


def headings(path):
    out = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"#+\s+(.*\S)\s*$", line)
            if m:
                out.add(m.group(1))
                # "grammar (structured outputs: ...)" is cited as "grammar"
                out.add(re.sub(r"\s+\(.*\)$", "", m.group(1)))
    return out


docs = {}
bad = []
n = 0
for top in ("server", "engine", "scheduler", "kernels", "tests", "bench", "config", "deploy",
            "docs", ".ci"):
    for dirpath, _, files in os.walk(os.path.join(root, top)):
        for name in files:
            if not name.endswith((".c", ".h", ".cu", ".cuh", ".py", ".sh", ".md", ".cmake",
                                  ".txt", ".js", ".html")):
                continue
            path = os.path.join(dirpath, name)
            if os.path.abspath(path) == os.path.abspath(__file__):
                continue
            try:
                text = open(path, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                continue
            for m in CITE.finditer(text):
                doc, section = m.group(1), CONT.sub(" ", m.group(2)).strip()
                dpath = os.path.join(root, "docs", doc)
                if doc not in docs:
                    docs[doc] = headings(dpath) if os.path.exists(dpath) else None
                n += 1
                if docs[doc] is None or section not in docs[doc]:
                    line = text.count("\n", 0, m.start()) + 1
                    bad.append(f"{os.path.relpath(path, root)}:{line}: docs/{doc} has no "
                               f"section \"{section}\"")
for b in bad:
    print(b)
print(f"{n} section cites checked, {len(bad)} broken")
sys.exit(1 if bad else 0)

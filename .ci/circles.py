#!/usr/bin/env python3
"""Find dependency circles among the files of a Rust crate's src/.

Reads every .rs file under SRC (default: ./src), maps each file to its module path
(src/lib.rs -> crate, src/a/mod.rs -> crate::a, src/a/b.rs -> crate::a::b; inline
`mod x { ... }` blocks are tracked so `super::` inside `mod tests` means the file itself),
and collects the references each file makes to other modules of the crate:

  * `use` trees (groups, nested groups, `self`, globs, renames) rooted at `crate::`,
    `super::`, `self::`, or at a name an earlier `use` bound to a module of the crate;
  * path expressions anywhere in code (`crate::a::b::f()`, `super::x::Y`, `self::m::z`,
    `name::...` where `name` was bound by a `use` to a crate module), comments and string
    literals stripped first.

Each reference resolves to the longest prefix that is a file's module; that gives an
edge file -> file (self-edges dropped). `mod x;` declarations are not edges (a parent
declaring a child does not use it). Strongly connected components with more than one file
are the circles; for each, one shortest cycle is printed.

Usage: circles.py [SRC] [--no-tests] [--children] [--edges PREFIX]
  --children      also count a parent's references to its own child modules by their bare
                  name (`backend::LiveCatalog` in server/mod.rs): a parent module then
                  joins a circle with any child that uses the parent's items
  --no-tests      ignore code inside `#[cfg(test)]` items (test modules)
  --edges PREFIX  also print the edges between files whose module starts with PREFIX
Exit status 1 when a circle is found.
"""
import os
import re
import sys
from collections import defaultdict, deque

args = [a for a in sys.argv[1:]]
no_tests = "--no-tests" in args
children = "--children" in args
edges_prefix = None
if "--edges" in args:
    edges_prefix = args[args.index("--edges") + 1]
    del args[args.index("--edges") : args.index("--edges") + 2]
args = [a for a in args if not a.startswith("--")]
SRC = args[0] if args else "src"

# ---------------------------------------------------------------- files -> modules
files = {}  # module path (tuple) -> file path
for root, _, names in os.walk(SRC):
    for n in names:
        if not n.endswith(".rs"):
            continue
        p = os.path.join(root, n)
        rel = os.path.relpath(p, SRC)[:-3].split(os.sep)
        if rel in (["lib"],):
            mod = ("crate",)
        elif rel == ["main"]:
            mod = ("main",)  # the binary: a crate of its own
        elif rel[-1] == "mod":
            mod = ("crate",) + tuple(rel[:-1])
        else:
            mod = ("crate",) + tuple(rel)
        files[mod] = p

# `#[path = "x.rs"] mod name;` remaps (only in lib.rs here: no_demo.rs is `emulator`
# without the demo feature). Treat the remapped file as an alternative of that module.
alias_files = {}
for mod, p in list(files.items()):
    text = open(p, encoding="utf-8").read()
    for m in re.finditer(r'#\[path\s*=\s*"([^"]+)"\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', text):
        target = os.path.normpath(os.path.join(os.path.dirname(p), m.group(1)))
        for k, v in list(files.items()):
            if os.path.normpath(v) == target:
                del files[k]
                alias_files[mod + (m.group(2),) + ("#" + os.path.basename(target),)] = v
files.update(alias_files)

known = set(files)


def strip(text):
    """Comments and string/char literals replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == "b" and i + 1 < n and text[i + 1] == '"' and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            out.append(" ")
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'":
            # char literal ('a', '\n', '\u{..}') vs lifetime ('a)
            m = re.match(r"'(\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_cfg_test(code):
    """Blank the items marked #[cfg(test)] (a braced block or one item up to `;`)."""
    out = list(code)
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        j = m.end()
        # find the item's body: the first `{` or `;` at depth 0
        while j < len(code) and code[j] not in "{;":
            j += 1
        if j < len(code) and code[j] == "{":
            depth = 0
            k = j
            while k < len(code):
                if code[k] == "{":
                    depth += 1
                elif code[k] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            j = k
        for k in range(m.start(), min(j + 1, len(code))):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out)


def scopes(code, filemod):
    """For each character offset, the module path of the innermost inline `mod` there."""
    # returns a list of (start, end, modpath) for inline modules, innermost last
    spans = []
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", code):
        depth, k = 0, m.end() - 1
        while k < len(code):
            if code[k] == "{":
                depth += 1
            elif code[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        spans.append((m.start(), k, m.group(1)))
    def mod_at(pos):
        path = list(filemod)
        for s, e, name in sorted(spans):
            if s <= pos <= e:
                path.append(name)
        return tuple(path)
    return mod_at


def split_top(s, sep=","):
    parts, depth, cur = [], 0, []
    for c in s:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def expand(tree, prefix=()):
    """A use tree -> list of (path segments, bound name or None)."""
    tree = tree.strip()
    if "{" in tree and tree.endswith("}"):
        head, body = tree[: tree.index("{")], tree[tree.index("{") + 1 : -1]
        head = [x for x in head.strip().rstrip(":").split("::") if x]
        res = []
        for sub in split_top(body):
            res += expand(sub, prefix + tuple(head))
        return res
    name = None
    m = re.match(r"^(.*?)\s+as\s+(\w+)$", tree)
    if m:
        tree, name = m.group(1), m.group(2)
    segs = [x for x in tree.split("::") if x]
    if segs and segs[-1] == "self":
        segs = segs[:-1]
        path = prefix + tuple(segs)
        return [(path, name or (path[-1] if path else None))]
    if segs and segs[-1] == "*":
        return [(prefix + tuple(segs[:-1]), None)]
    path = prefix + tuple(segs)
    return [(path, name or (path[-1] if path else None))]


def absolute(segs, here):
    """Resolve a path's leading crate/super/self against module `here`."""
    segs = list(segs)
    if not segs:
        return None
    if segs[0] == "crate":
        return ("crate",) + tuple(segs[1:])
    if segs[0] in ("super", "self"):
        cur = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                if len(cur) <= 1:
                    return None
                cur.pop()
            segs.pop(0)
        return tuple(cur) + tuple(segs)
    return None


def file_of(path):
    """Longest prefix of `path` that is a file module (inline modules belong to files)."""
    best = None
    for k in range(len(path), 0, -1):
        if path[:k] in known:
            best = path[:k]
            break
    return best


def is_module(path):
    return any(k[: len(path)] == path for k in known) if path else False


edges = defaultdict(set)
for mod, p in files.items():
    filemod = tuple(x for x in mod if not x.startswith("#"))
    if filemod == ("main",):
        continue
    code = strip(open(p, encoding="utf-8").read())
    if no_tests:
        code = drop_cfg_test(code)
    mod_at = scopes(code, filemod)
    bound = {}  # name -> absolute module path (per file; good enough)
    if children:
        # a module's own child modules are names in its scope (`backend::X` in mod.rs)
        for k in known:
            if len(k) == len(filemod) + 1 and k[: len(filemod)] == filemod:
                bound[k[-1]] = k
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        here = mod_at(m.start())
        for segs, name in expand(re.sub(r"\s+", " ", m.group(1))):
            if segs and segs[0] in bound:
                ab = bound[segs[0]] + tuple(segs[1:])
            else:
                ab = absolute(segs, here)
            if not ab:
                continue
            f = file_of(ab)
            if f and f != mod:
                edges[mod].add((f, "use " + "::".join(segs)))
            if name and is_module(ab):
                bound[name] = ab
    # Paths in code; `use` items were read whole above (blanked, positions kept, so that
    # `use crate::a::{b, c}` is not also read as a path to `crate::a`).
    paths = re.sub(r"\buse\s+[^;]+;", lambda m: " " * len(m.group(0)), code)
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self|\w+)(?:\s*::\s*\w+)+)", paths):
        here = mod_at(m.start())
        segs = [x.strip() for x in m.group(1).split("::")]
        if segs[0] in bound:
            ab = bound[segs[0]] + tuple(segs[1:])
        else:
            ab = absolute(segs, here)
        if not ab:
            continue
        f = file_of(ab)
        if f and f != mod:
            edges[mod].add((f, "::".join(segs)))

name = lambda m: "::".join(x for x in m if not x.startswith("#")).replace("crate::", "").replace("crate", "lib") + (
    " (" + [x for x in m if x.startswith("#")][0][1:] + ")" if any(x.startswith("#") for x in m) else "")

graph = {m: {t for t, _ in es} for m, es in edges.items()}

# Tarjan's SCC
index, low, onstack, stack, sccs, counter = {}, {}, set(), [], [], [0]
sys.setrecursionlimit(10000)


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    onstack.add(v)
    for w in graph.get(v, ()):
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in onstack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            onstack.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(comp)


for v in list(files):
    if v not in index:
        strong(v)


def shortest_cycle(comp):
    comp = set(comp)
    best = None
    for s in comp:
        prev = {s: None}
        q = deque([s])
        while q:
            v = q.popleft()
            for w in graph.get(v, ()):
                if w not in comp:
                    continue
                if w == s:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    path = path[::-1] + [s]
                    if best is None or len(path) < len(best):
                        best = path
                    q.clear()
                    break
                if w not in prev:
                    prev[w] = v
                    q.append(w)
    return best


n_edges = sum(len(v) for v in graph.values())
print(f"{len(files)} files under {SRC}, {n_edges} file-to-file edges"
      + (" (test code ignored)" if no_tests else " (test code included)"))
circles = [c for c in sccs if len(c) > 1]
if edges_prefix:
    pre = tuple(edges_prefix.split("::"))
    pre = ("crate",) + pre if pre[0] != "crate" else pre
    print(f"edges among {edges_prefix}:")
    for m in sorted(graph):
        if m[: len(pre)] != pre:
            continue
        for t in sorted(graph[m]):
            if t[: len(pre)] == pre:
                print(f"  {name(m)} -> {name(t)}")
for c in sorted(circles, key=len):
    cyc = shortest_cycle(c)
    print(f"CIRCLE of {len(c)} files: " + ", ".join(sorted(name(x) for x in c)))
    print("  e.g. " + " -> ".join(name(x) for x in cyc))
    for a, b in zip(cyc, cyc[1:]):
        why = sorted(r for t, r in edges[a] if t == b)[:2]
        print(f"     {name(a)} -> {name(b)}: {'; '.join(why)}")
print("no circle among files" if not circles else f"{len(circles)} circle(s)")
sys.exit(1 if circles else 0)

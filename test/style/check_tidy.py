#!/usr/bin/env python3
"""clang-tidy over every project translation unit of build/compile_commands.json, with a cache.

Why a cache: today's .clang-tidy costs ~10-30 CPU seconds per TU (the AST matchers walk the
Boost/libstdc++ headers too; the analyzer adds more), ~50 CPU minutes for all ~190 TUs, far
beyond what the 30-minute suite can spend. A TU's result depends only on the text the compiler
sees and on the configuration, so each result is stored under a hash of: the clang-tidy version,
the .clang-tidy file, the TU's compile flags, its path, and the content of the TU and of every
file it includes (the header list of the last build, from `ninja -t deps`; for a TU not built
yet, its preprocessed text from the compiler). A warm build directory re-checks only the TUs
whose text changed; a fresh clone pays the whole cost once.

Exit status: 0 clean, 1 findings (printed once each, with file:line), 77 when clang-tidy is
missing (CTest: skipped). Usage:
  test/style/check_tidy.py --build-dir build [-j 2] [--cache DIR] [--only REGEX]
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time

# gcc accepts these, clang does not: dropped from the command line handed to clang-tidy.
# (-Wfoo that clang does not know are only warnings, silenced by -Wno-unknown-warning-option.)
GCC_ONLY_PREFIXES = ("-fconcepts-diagnostics-depth", "-fno-canonical-system-headers",
                     "-fmax-include-depth", "-fcoroutines", "-fno-tree-", "-ftree-",
                     "-fipa-", "-fno-ipa-")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", required=True)
    p.add_argument("--source-dir", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    p.add_argument("--cache", default=os.environ.get("MESHWIRE_TIDY_CACHE"),
                   help="results cache (default: <build-dir>/style_tidy_cache)")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--clang-tidy", default=os.environ.get("CLANG_TIDY", "clang-tidy-15"))
    p.add_argument("--only", help="regex on the TU path: check only those")
    p.add_argument("--checks", default="",
                   help="appended to .clang-tidy's Checks (clang-tidy --checks), e.g. "
                        "'-clang-analyzer-*'; part of the cache key")
    p.add_argument("--show-timing", action="store_true", help="print each checked TU's time")
    p.add_argument("--unity", action="store_true",
                   help="check a unity build's unity files as they are (each parses its batch's "
                        "headers once: ~4x cheaper) instead of every source on its own")
    return p.parse_args()


def tu_args(entry):
    """The compile command as a list, without compiler, -c, -o X and the source file."""
    argv = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a == "-c" or a == entry["file"] or a.startswith(GCC_ONLY_PREFIXES):
            continue
        out.append(a)
    return out


def ninja_deps(build_dir):
    """Object path (relative to the build dir) -> list of its inputs, from the last build."""
    deps = {}
    try:
        text = subprocess.run(["ninja", "-C", build_dir, "-t", "deps"], capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return deps
    current = None
    for line in text.splitlines():
        if not line.strip():
            current = None
        elif not line.startswith(" "):
            current = line.split(":", 1)[0]
            deps[current] = []
        elif current is not None:
            deps[current].append(line.strip())
    return deps


_file_hashes = {}


def file_hash(path):
    h = _file_hashes.get(path)
    if h is None:
        try:
            with open(path, "rb") as f:
                h = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            h = "missing"
        _file_hashes[path] = h
    return h


def portable(text, source_dir, build_dir):
    """Paths of this checkout made relative, so that clones and worktrees can share a cache."""
    return text.replace(build_dir, "<build>").replace(source_dir + os.sep, "").replace(
        source_dir, ".")


def tu_key(entry, args, deps, prefix, source_dir, build_dir):
    """Hash of everything clang-tidy's result depends on (see the module comment)."""
    h = hashlib.sha256(prefix)
    h.update(portable(entry["file"] + "\0" + "\0".join(args) + "\0", source_dir,
                      build_dir).encode())
    argv = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    obj = argv[argv.index("-o") + 1] if "-o" in argv else None
    inputs = deps.get(obj) if obj else None
    if inputs:
        for p in [entry["file"]] + inputs:
            p = os.path.normpath(os.path.join(entry["directory"], p))
            h.update(portable(p, source_dir, build_dir).encode() + b"\0" + file_hash(p).encode())
        return h.hexdigest(), "deps"
    # Not built yet: the preprocessed text (the compiler's own, same flags).
    pre = subprocess.run([argv[0], "-E", "-P"] + tu_args(entry) + [entry["file"]],
                         cwd=entry["directory"], capture_output=True, check=False)
    h.update(portable((pre.stdout + pre.stderr).decode(errors="replace"), source_dir,
                      build_dir).encode())
    return h.hexdigest(), "preprocessed"


def run_tidy(tidy, checks, entry, args, source_dir):
    cmd = [tidy, "--quiet", "--warnings-as-errors=*"]
    if "unity_sources" in entry:
        # The unity file lives in the build dir: name the config, report findings in the sources
        # it includes (to clang-tidy those are headers), and do not flag the #include of a .cpp.
        checks = ",".join(c for c in (checks, "-bugprone-suspicious-include") if c)
        cmd += ["--config-file=" + os.path.join(source_dir, ".clang-tidy"),
                "--header-filter=(common|cni-plugin|meshd|meshctl|tools)/"]
    cmd += ["--checks=" + checks] if checks else []
    cmd += [entry["file"], "--"] + args + [
        "-Wno-unknown-warning-option", "-Qunused-arguments"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=entry["directory"], capture_output=True, text=True)
    # Keep the findings, drop clang-tidy's "N warnings generated" chatter.
    lines = [l for l in r.stdout.splitlines()
             if not re.match(r"^\d+ warnings? (and \d+ errors? )?generated\.$", l)]
    err = [l for l in r.stderr.splitlines()
           if not re.match(r"^(\d+ warnings?( and \d+ errors?)? generated\.|Suppressed \d+ warnings|"
                           r"Use -header-filter=|Error while processing|\d+ warnings? treated as errors?)", l)]
    return r.returncode, "\n".join(lines + err).strip(), time.monotonic() - t0


def unity_sources(entry):
    """The sources a unity file (CMAKE_UNITY_BUILD) includes; None for any other TU."""
    f = entry["file"]
    if not re.search(r"/Unity/unity_\d+_cxx\.cxx$", f):
        return None
    path = os.path.join(entry["directory"], f)
    # Unreadable or empty, its sources would go unchecked and the check pass: an error instead.
    try:
        with open(path) as u:
            sources = re.findall(r'^#include "(.+)"$', u.read(), re.M)
    except OSError as err:
        sys.exit(f"check_tidy.py: cannot read the unity file {path}: {err.strerror}"
                 " (build the tree first: install/build.sh)")
    if not sources:
        sys.exit(f"check_tidy.py: the unity file {path} includes no sources")
    return sources


def expand_unity(db):
    """A unity build (CMAKE_UNITY_BUILD, install/build.sh) compiles generated unity_N_cxx.cxx files
    that #include several sources: each of those is checked on its own, with the unity file's
    flags (so a source that compiles only after its batch neighbours' includes is a finding)."""
    out = []
    for e in db:
        f = e["file"]
        sources = unity_sources(e)
        if sources is None:
            out.append(e)
            continue
        for src in sources:
            x = dict(e, file=src)
            if "arguments" in e:
                x["arguments"] = [src if a == f else a for a in e["arguments"]]
            else:
                x["command"] = " ".join(shlex.quote(src) if a == f else shlex.quote(a)
                                        for a in shlex.split(e["command"]))
            out.append(x)
    return out


def main():
    a = parse_args()
    source_dir = os.path.realpath(a.source_dir)
    build_dir = os.path.realpath(a.build_dir)
    tidy = shutil.which(a.clang_tidy)
    if not tidy:
        print(f"check_tidy.py: {a.clang_tidy} not found (install/deps.sh installs it)",
              file=sys.stderr)
        return 77
    db_path = os.path.join(build_dir, "compile_commands.json")
    with open(db_path) as f:
        db = json.load(f)
    if a.unity:
        for e in db:
            sources = unity_sources(e)
            if sources is not None:
                e["unity_sources"] = sources
    else:
        db = expand_unity(db)

    def ours(path):  # under the source dir, not generated into the build dir
        path = os.path.realpath(path)
        return path.startswith(source_dir + os.sep) and not path.startswith(build_dir + os.sep)

    def wanted(e):
        files = e.get("unity_sources", [e["file"]])
        return any(ours(f) and (not a.only or re.search(a.only, f)) for f in files)

    tus = [e for e in db if wanted(e)]
    if not tus:
        print("check_tidy.py: no translation units", file=sys.stderr)
        return 1
    cache = a.cache or os.path.join(build_dir, "style_tidy_cache")
    os.makedirs(cache, exist_ok=True)

    version = subprocess.run([tidy, "--version"], capture_output=True, text=True).stdout
    with open(os.path.join(source_dir, ".clang-tidy"), "rb") as f:
        config = f.read()
    prefix = hashlib.sha256(version.encode() + b"\0" + config + b"\0" + a.checks.encode())
    prefix = prefix.digest()

    start = time.monotonic()
    deps = ninja_deps(build_dir)
    work, results, how = [], {}, {"deps": 0, "preprocessed": 0}
    for e in tus:
        args = tu_args(e)
        key, kind = tu_key(e, args, deps, prefix, source_dir, build_dir)
        how[kind] += 1
        path = os.path.join(cache, key[:2], key + ".json")
        try:
            with open(path) as f:
                results[e["file"]] = json.load(f)
            os.utime(path)  # recently used: kept by a pruning by age
        except (OSError, ValueError):
            work.append((e, args, path))
    hashed_s = time.monotonic() - start

    failed = False
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
        futs = {pool.submit(run_tidy, tidy, a.checks, e, args, source_dir): (e, path) for e, args, path in work}
        for fut in concurrent.futures.as_completed(futs):
            e, path = futs[fut]
            rc, out, secs = fut.result()
            res = {"rc": rc, "out": portable(out, source_dir, build_dir), "seconds": round(secs, 2)}
            results[e["file"]] = res
            # A crash or a TU that does not parse is not cached: it may be the machine.
            if rc in (0, 1) and ("error:" not in out or rc == 1):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "w") as f:
                    json.dump(res, f)
                os.replace(path + ".tmp", path)
            if a.show_timing or rc != 0:
                print(f"check_tidy.py: {os.path.relpath(e['file'], source_dir)}: rc {rc}, "
                      f"{secs:.1f} s", flush=True)

    # The same header finding shows up once per TU that includes it: print each once.
    seen, findings = set(), []
    for f in sorted(results):
        r = results[f]
        if r["rc"] != 0:
            failed = True
        block, blocks = [], []
        for line in r["out"].splitlines():
            if re.match(r"^\S+:\d+:\d+: (warning|error):", line) and block:
                blocks.append(block)
                block = []
            block.append(line)
        if block:
            blocks.append(block)
        for b in blocks:
            k = b[0]
            if k not in seen:
                seen.add(k)
                findings.append("\n".join(b))
    for f in findings:
        print(f)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"check_tidy.py: {len(tus)} TUs ({how['deps']} keyed by the build's header list, "
          f"{how['preprocessed']} by preprocessing in {hashed_s:.1f} s), {len(work)} checked, "
          f"{len(tus) - len(work)} from the cache {cache}; "
          f"{len([f for f in findings if re.search(r': (warning|error):', f)])} findings; "
          f"{time.monotonic() - start:.1f} s wall, "
          f"{kids.ru_utime + kids.ru_stime:.1f} CPU s in child processes (clang-tidy, ninja, the compiler)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

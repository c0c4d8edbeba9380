#!/usr/bin/env python3
"""Install xvae_fast into the Python that runs this script, with a torch that fits this machine.

    python install.py           torch, the build tools, then `pip install --no-build-isolation .`
    python install.py --test    the same, with the test extras: `.[test]`

torch: an importable torch (>= 2.4) is kept. Otherwise: on Linux with an NVIDIA GPU visible, PyPI's
torch (a CUDA build); on Linux without one, the CPU build from https://download.pytorch.org/whl/cpu
(when that index is unreachable, a CPU build found in pip's configured sources, and none at all
stops the script rather than download several GB of CUDA wheels); on macOS and Windows, PyPI's
torch. `--torch cpu|cuda` overrides the choice. Every decision is printed on one line.

The extension build runs with `pip -v`, filtered: one line per compiled file, the compiler's
warnings and errors, and the build's wall and CPU time. The whole log is kept in a file whose path
is printed; a failed build also prints the log's tail.

Standard library only (Python >= 3.9): it runs before anything is installed.
"""
import argparse
import collections
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MIN_TORCH = (2, 4)
BUILD_TOOLS = ["setuptools>=64", "wheel", "ninja"]
TAIL_LINES = 60

Decision = collections.namedtuple("Decision", "notes commands error expect")
Decision.__doc__ = """What install.py will do. notes: one line per decision; commands: the pip
argument lists to run (after `python -m pip`), in order; error: why nothing can be installed (then
commands is empty); expect: 'cpu' when the installed torch must be a CPU build, else None."""


def say(msg):
    print(f"install.py: {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# The decision (pure: no I/O, so it is tested on every case without running pip)
# ------------------------------------------------------------------------------------------------

def version_tuple(version):
    """(2, 13, 0) from '2.13.0+cpu', '2.5.0a0+git1234' or '2.4'."""
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts + [0] * (3 - len(parts)))


def _value(x):
    """A probe's result: the value itself, or a zero-argument function called only when needed."""
    return x() if callable(x) else x


def decide(system, gpu, torch_found, index_reachable, cpu_builds, want="auto", test=False):
    """The pip commands that install xvae_fast on this machine.

    system: sys.platform ('linux', 'darwin', 'win32', ...). gpu: a description of the NVIDIA GPU
    seen (e.g. 'GPU 0: NVIDIA H100'), or None. torch_found: None, or (version, cuda) of the
    importable torch (cuda None for a CPU build). index_reachable: (reachable, reason) for the CPU
    index. cpu_builds: CPU builds of torch ('2.13.0+cpu', newest first) in pip's configured sources.
    The last two may be functions, called only when the decision needs them. want: 'auto', 'cpu'
    or 'cuda' (--torch). test: install the test extras."""
    notes = []
    build = ["install", "-v", "--no-build-isolation", ".[test]" if test else "."]
    tools = ["install", *BUILD_TOOLS]
    spec = "torch"
    if torch_found is not None:
        version, cuda = torch_found
        kind = f"a CUDA {cuda} build" if cuda else "a CPU build"
        if version_tuple(version) >= MIN_TORCH:
            if (want == "cpu" and cuda) or (want == "cuda" and not cuda):
                return Decision(notes, [], (
                    f"torch {version} ({kind}) is installed, but --torch {want} asks for a "
                    f"{'CPU' if want == 'cpu' else 'CUDA'} build: uninstall it first "
                    f"({shlex.join([sys.executable, '-m', 'pip', 'uninstall', 'torch'])}) and rerun"),
                    None)
            note = f"torch: keeping the installed torch {version} ({kind})"
            if cuda and not gpu:
                note += "; no NVIDIA GPU is seen, so the CUDA kernels are built only for a visible " \
                        "GPU or TORCH_CUDA_ARCH_LIST"
            notes.append(note)
            return Decision(notes, [tools, build], None, None)
        notes.append(f"torch: the installed torch {version} is older than "
                     f"{'.'.join(map(str, MIN_TORCH))}, which xvae_fast needs: replacing it")
        spec = "torch>=%d.%d" % MIN_TORCH

    if want == "cuda":
        notes.append(f"torch: --torch cuda: PyPI's torch"
                     + (" (a CUDA build)" if system.startswith("linux") else
                        " (on this platform PyPI's torch has no CUDA; see pytorch.org)"))
        return Decision(notes, [["install", spec], tools, build], None, None)
    if system.startswith("linux") and want == "auto" and gpu:
        notes.append(f"torch: an NVIDIA GPU is seen ({gpu}): PyPI's torch, a CUDA build")
        return Decision(notes, [["install", spec], tools, build], None, None)
    if not system.startswith("linux"):
        name = {"darwin": "macOS", "win32": "Windows"}.get(system, system)
        notes.append(f"torch: {name}: PyPI's torch"
                     + (" (a CPU build there)" if system in ("darwin", "win32") else ""))
        return Decision(notes, [["install", spec], tools, build], None, None)

    why = "--torch cpu" if want == "cpu" else "no NVIDIA GPU is seen"
    reachable, reason = _value(index_reachable)
    if reachable:
        notes.append(f"torch: {why}: the CPU build from {CPU_INDEX}")
        return Decision(notes, [["install", spec, "--index-url", CPU_INDEX], tools, build], None,
                        "cpu")
    notes.append(f"torch: {why}, but the CPU index {CPU_INDEX} is unreachable ({reason}): looking "
                 "for a CPU build in pip's configured sources")
    builds = [b for b in _value(cpu_builds) if version_tuple(b) >= MIN_TORCH]
    if builds:
        notes.append(f"torch: found torch {builds[0]} there, a CPU build: installing it")
        return Decision(notes, [["install", f"torch=={builds[0]}"], tools, build], None, "cpu")
    return Decision(notes, [], (
        f"no CPU build of torch is reachable (neither {CPU_INDEX} nor pip's configured sources have "
        "one), and PyPI's torch for Linux is a CUDA build of several GB. Either make that index "
        "reachable, or install a CPU build of torch yourself and rerun (it is kept), or pass "
        "--torch cuda to install PyPI's torch anyway"), None)


# ------------------------------------------------------------------------------------------------
# The probes
# ------------------------------------------------------------------------------------------------

def nvidia_gpu():
    """A description of the first NVIDIA GPU seen ('GPU 0: NVIDIA H100 ...'), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        gpus = [l.strip() for l in out.stdout.splitlines() if l.strip().startswith("GPU ")]
        if out.returncode == 0 and gpus:
            return gpus[0] + (f" and {len(gpus) - 1} more" if len(gpus) > 1 else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        gpus = os.listdir("/proc/driver/nvidia/gpus")
        if gpus:
            return f"{len(gpus)} in /proc/driver/nvidia/gpus"
    except OSError:
        pass
    return None


_TORCH_PROBE = r"""
import importlib.metadata as md, importlib.util, json, sys
if importlib.util.find_spec("torch") is None:
    print(json.dumps(None)); sys.exit(0)
import torch
names = sorted({(d.metadata["Name"] or "") for d in md.distributions()})
print(json.dumps([torch.__version__, torch.version.cuda,
                  [n for n in names if n.lower().startswith("nvidia")]]))
"""


class TorchBroken(Exception):
    pass


def probe_torch():
    """None, or (version, cuda, nvidia packages) of the torch this Python imports."""
    out = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise TorchBroken(last)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return None if found is None else tuple(found)


def probe_index(url=CPU_INDEX, timeout=5.0):
    """(reachable, reason): the first bytes of the index's torch page, within `timeout` seconds."""
    import urllib.request
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout) as resp:
            resp.read(256)
            return True, f"HTTP {resp.status}"
    except Exception as e:  # DNS, proxy, TLS, timeout, HTTP error: all mean "not usable"
        reason = getattr(e, "reason", None) or e
        return False, f"{type(e).__name__}: {reason}"[:160]


def cpu_builds_in_pip_sources(pip):
    """The CPU builds of torch ('2.13.0+cpu', newest first) in pip's configured indexes and links."""
    try:
        out = subprocess.run(pip + ["index", "versions", "torch"], capture_output=True, text=True,
                             timeout=300)
    except (OSError, subprocess.SubprocessError):
        return []
    for line in out.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            versions = [v.strip() for v in line.split(":", 1)[1].split(",")]
            cpu = [v for v in versions if v.endswith("+cpu") and version_tuple(v) >= MIN_TORCH]
            return sorted(cpu, key=version_tuple, reverse=True)
    return []


# ------------------------------------------------------------------------------------------------
# The build's output filter
# ------------------------------------------------------------------------------------------------

_NINJA = re.compile(r"^\[(\d+)/(\d+)\]\s+(.*)$")
# A compiler's (or linker's) diagnostic: gcc 'file:12:5: warning: ...', '<command-line>: warning:
# ...', nvcc 'file.cu(12): warning #177-D: ...', 'ld: error: ...'.
_CC_DIAG = re.compile(r"^\S[^:(]*(\(\d+\)|(:\d+)+)?: (fatal error|error|warning)( #[\w-]+)?:", re.I)


class BuildFilter:
    """Turns `pip install -v` output into the lines worth showing: setup.py's announcement, one line
    per compiled file ('[3/8] compiled csrc/cpu/foo.cpp (21 s)'), the link, compiler warnings and
    errors in full, and pip's own result and error lines. feed() returns the lines to print."""

    _KEEP_PREFIXES = ("xvae_fast:", "Successfully installed", "ERROR:", "error:", "WARNING:",
                      "FAILED:", "ninja: ", "Collecting ", "Building wheel for")
    # setuptools' notice, and pip's about a configured index that lacks a package (once per package)
    _SKIP = ("byte-compiling is disabled", "WARNING: Location '")

    def __init__(self, root=HERE, clock=time.monotonic):
        self.root = root.rstrip(os.sep) + os.sep
        self.clock = clock
        self.start = clock()
        self.compiled = 0
        self.warnings = 0
        self.errors = 0
        self.build_start = None  # when pip started building the wheel
        self.build_end = None    # when the extension was linked
        self._seen = set()

    def _elapsed(self):
        return f"{self.clock() - self.start:.0f} s"

    def _short(self, path):
        path = path.strip("'\"")
        if path.startswith(self.root):
            return path[len(self.root):]
        i = path.find("csrc/")
        return path[i:] if i >= 0 else os.path.basename(path)

    def feed(self, line):
        text = line.rstrip("\n").strip()
        if not text or any(s in text for s in self._SKIP):
            return []
        m = _NINJA.match(text)
        if m:
            words = m.group(3).split()
            # the source follows -c (BuildExtension's gcc lines even carry "-c -c SOURCE")
            src = next((w for prev, w in zip(words, words[1:])
                        if prev == "-c" and not w.startswith("-")), None)
            if src is None:  # a ninja step that is not a compile
                return [f"  [{m.group(1)}/{m.group(2)}] {words[0] if words else ''} "
                        f"({self._elapsed()})"]
            self.compiled += 1
            return [f"  [{m.group(1)}/{m.group(2)}] compiled {self._short(src)} ({self._elapsed()})"]
        words = text.split()
        if text.startswith("ninja: "):  # ninja's own notices ("ninja: warning: build log ...")
            return [f"  {text}"]
        diag = _CC_DIAG.match(text)
        if diag:  # counted every time, shown once (a template instantiated 4 times warns 4 times)
            if diag.group(3).lower() == "warning":
                self.warnings += 1
            else:
                self.errors += 1
            if text in self._seen:
                return []
            self._seen.add(text)
            return [f"  {text}"]
        if "-shared" in words and "-o" in words[:-1]:
            out = words[words.index("-o") + 1]
            self.build_end = self.clock()
            return [f"  linking {os.path.basename(out)} ({self._elapsed()})"]
        if text.startswith("Building wheel for") and self.build_start is None:
            self.build_start = self.clock()
        if text.startswith(self._KEEP_PREFIXES):
            if text.startswith("xvae_fast:"):
                if text in self._seen:
                    return []
                self._seen.add(text)
            return [f"  {text}"]
        return []


# ------------------------------------------------------------------------------------------------
# Running pip
# ------------------------------------------------------------------------------------------------

def _show(cmd):
    return shlex.join([os.path.basename(cmd[0]) if cmd[0] == sys.executable else cmd[0]] + cmd[1:])


def run_plain(cmd):
    say(f"running: {_show(cmd)}")
    start = time.monotonic()
    rc = subprocess.run(cmd, cwd=HERE).returncode
    if rc == 0:
        say(f"took {time.monotonic() - start:.0f} s")
    return rc


def run_build(cmd):
    """The extension's pip step, its output filtered; the whole log kept in a file."""
    say(f"running: {_show(cmd)} (the build's progress below; the full log: see the end)")
    fd, log_path = tempfile.mkstemp(prefix="xvae_fast-build-", suffix=".log")
    filt = BuildFilter()
    tail = collections.deque(maxlen=TAIL_LINES)
    before = _children_cpu()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip("\n"))
            for shown in filt.feed(line):
                print(shown, flush=True)
        rc = proc.wait()
    wall = time.monotonic() - filt.start
    after = _children_cpu()
    cpu_text = "" if after is None else f", {after - before:.0f} s of CPU"
    if rc != 0:
        print(f"---- the last {len(tail)} lines of the build's log ----")
        print("\n".join(tail))
        print("----")
        say(f"the build FAILED (pip exit status {rc}) after {wall:.0f} s; the whole log: {log_path}")
        return rc
    compile_text = ""
    if filt.build_start is not None and filt.build_end is not None:
        compile_text = f" in {filt.build_end - filt.build_start:.0f} s"
    say(f"built and installed in {wall:.0f} s{cpu_text} (the extension: {filt.compiled} files "
        f"compiled{compile_text}, {filt.warnings} compiler warnings); the whole log: {log_path}")
    return 0


def _children_cpu():
    try:
        import resource
    except ImportError:  # Windows
        return None
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def verify_torch(expect):
    found = probe_torch()
    if found is None:
        say("torch does not import after its install")
        return 1
    version, cuda, nvidia = found
    kind = f"a CUDA {cuda} build" if cuda else "a CPU build"
    extra = f"{len(nvidia)} nvidia-* packages" if nvidia else "no nvidia-* packages"
    say(f"torch: installed torch {version}, {kind} ({extra})")
    if expect == "cpu" and cuda:
        say("torch: a CPU build was expected here, and this is not one: uninstall it "
            f"({_show([sys.executable, '-m', 'pip', 'uninstall', 'torch'] + nvidia)}), "
            "install a CPU build of torch yourself, then rerun")
        return 1
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="install.py",
        description="Install xvae_fast into this Python with a torch that fits this machine: the "
                    "installed torch is kept; else PyPI's torch (CUDA) on Linux with an NVIDIA GPU, "
                    f"the CPU build from {CPU_INDEX} on Linux without one, PyPI's torch on macOS and "
                    "Windows. Then the build tools (setuptools, wheel, ninja) and "
                    "`pip install --no-build-isolation .`, showing the build's progress.")
    p.add_argument("--test", action="store_true", help="install the test extras too: .[test]")
    p.add_argument("--torch", choices=("auto", "cpu", "cuda"), default="auto",
                   help="which torch to install when none is installed (default auto: CUDA on Linux "
                        "with an NVIDIA GPU, CPU without one)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the decisions and the pip commands, and run nothing")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if sys.version_info < (3, 9):
        say(f"Python {sys.version.split()[0]}: xvae_fast needs Python 3.9 or newer")
        return 1
    pip = [sys.executable, "-m", "pip"]
    venv = sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") == sys.prefix
    say(f"Python {sys.version.split()[0]} at {sys.executable}"
        + ("" if venv else " (not a virtual environment: pip installs into it directly)"))
    if subprocess.run(pip + ["--version"], capture_output=True).returncode != 0:
        say("pip is not available for this Python: run `python -m ensurepip` (or install your "
            "system's python3-pip / python3-venv) and rerun")
        return 1
    gpu = nvidia_gpu() if sys.platform.startswith("linux") else None
    try:
        found = probe_torch()
    except TorchBroken as e:
        say(f"torch is installed but fails to import ({e}); fix or uninstall it "
            f"({_show(pip + ['uninstall', 'torch'])}) and rerun")
        return 1
    decision = decide(sys.platform, gpu, None if found is None else found[:2],
                      lambda: probe_index(), lambda: cpu_builds_in_pip_sources(pip),
                      want=args.torch, test=args.test)
    for note in decision.notes:
        say(note)
    if decision.error:
        say(decision.error)
        return 1
    if args.dry_run:
        for cmd in decision.commands:
            say(f"would run: {_show(pip + cmd)}")
        return 0
    start = time.monotonic()
    for cmd in decision.commands:
        if cmd[-1] in (".", ".[test]"):
            rc = run_build(pip + cmd)
        else:
            rc = run_plain(pip + cmd)
        if rc != 0:
            say(f"stopped: `{_show(pip + cmd)}` failed (exit status {rc})")
            return rc
        if cmd[1].startswith("torch"):
            rc = verify_torch(decision.expect)
            if rc != 0:
                return rc
    say(f"done in {time.monotonic() - start:.0f} s: xvae_fast is installed"
        + (" with its test extras" if args.test else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

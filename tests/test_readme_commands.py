"""The README's two quick-start commands: self-sufficient on a fresh machine (install.py installs
torch and the build tools first, then builds against that torch), and CI runs the test command
verbatim."""
import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_start():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return text.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def _quick_start_commands():
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", _quick_start(), re.S)]


def _install_module():
    spec = importlib.util.spec_from_file_location("xvae_install", os.path.join(ROOT, "install.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_start_commands_install_their_prerequisites():
    train, tests = _quick_start_commands()[:2]
    assert train == "python install.py && python -m xvae_fast.train"
    assert tests == "python install.py --test && pytest tests"
    # install.py installs torch (when none imports), the build tools, then builds against that torch
    install = _install_module()
    for test, target in ((False, "."), (True, ".[test]")):
        d = install.decide("linux", None, None, (True, "HTTP 200"), [], test=test)
        assert d.commands[0][:2] == ["install", "torch"]
        assert {"wheel", "ninja"} <= set(d.commands[1]) and any(
            t.startswith("setuptools") for t in d.commands[1])
        assert d.commands[2][-2:] == ["--no-build-isolation", target]


def test_the_manual_route_names_the_cpu_index_and_no_build_isolation():
    manual = _quick_start_commands()[2]
    assert "--index-url https://download.pytorch.org/whl/cpu" in manual
    assert "pip install --no-build-isolation ." in manual


def test_ci_runs_the_readme_test_command_verbatim():
    tests = _quick_start_commands()[1]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().strip().splitlines()
    assert ci[-1] == tests

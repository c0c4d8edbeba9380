"""The README's two quick-start commands: self-sufficient on a fresh machine (they install torch and
the build tools first), and CI runs the test command verbatim."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_start_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_commands_install_their_prerequisites():
    train, tests = _quick_start_commands()
    for cmd in (train, tests):
        first = cmd.split("&&")[0].split()
        assert first[:2] == ["pip", "install"] and {"torch", "setuptools", "wheel", "ninja"} <= set(first)
        assert "--no-build-isolation" in cmd
    assert train.endswith("python -m xvae_fast.train") and tests.endswith("pytest tests")


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _quick_start_commands()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().strip().splitlines()
    assert ci[-1] == tests

"""The project's own promises: Quick start, CI command, pins, layout."""

import re

from tests.conftest import ROOT


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    cmds = _quick_start_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert "streamlit run app.py" in cmds[0] and "requirements.txt" in cmds[0]
    assert "pytest" in cmds[1] and "requirements-dev.txt" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci


def test_requirements_pin_torch_and_exclude_torchvision():
    req = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in req
    assert not any(line.lower().startswith("torchvision") for line in req)


def test_top_level_layout():
    names = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    assert names == {"app.py", "pages", "core", "assets", "tests", "requirements.txt", "requirements-dev.txt",
                     "README.md"}, names


def test_core_never_imports_streamlit():
    for p in (ROOT / "core").rglob("*.py"):
        assert "import streamlit" not in p.read_text(), p

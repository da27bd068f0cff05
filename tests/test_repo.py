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




def test_readme_states_the_safe_radius_defaults_of_the_code():
    from core.msr import MSRParams

    d = MSRParams()
    text = (ROOT / "README.md").read_text()
    m = re.search(r"\(`MSRParams\(\)`: ℓ2, τ = ([\d.]+) px,\s+(\d+)-px blocks, all frame pairs, budget (\d+), "
                  r"(\d+) iterations, (\d+) s\)", text)
    assert m, "README: the Safe radius page's defaults sentence is missing"
    assert d.metric == "l2" and d.flows is None  # None = all frame pairs
    assert (float(m[1]), int(m[2]), float(m[3]), int(m[4]), float(m[5])) == (
        d.tau, d.block, d.budget, d.max_iters, d.time_limit)
    page = (ROOT / "pages" / "msr.py").read_text()
    assert "D = MSRParams()" in page and "D.tau" in page and "D.block" in page  # the page shows these


def _imported_modules(path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return names


def test_core_never_imports_streamlit():
    """Parsed, not grepped: ``import streamlit as st``, ``from streamlit import …``, dynamic imports;
    and at run time, importing every core module leaves streamlit unloaded."""
    import subprocess
    import sys

    files = list((ROOT / "core").rglob("*.py"))
    assert len(files) > 20
    for p in files:
        bad = {n for n in _imported_modules(p) if n == "streamlit" or n.startswith("streamlit.")}
        assert not bad, f"{p.relative_to(ROOT)} imports {bad}"
    mods = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in files if p.name != "__main__.py"]
    code = ("import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods) +
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_the_import_check_sees_every_form(tmp_path):
    p = tmp_path / "m.py"
    for src in ("import streamlit as st", "from streamlit import session_state",
                "import os, streamlit.runtime", "def f():\n    import importlib\n    importlib.import_module('streamlit')"):
        p.write_text(src)
        assert any(n.startswith("streamlit") for n in _imported_modules(p)), src
    p.write_text("x = 'import streamlit'  # a string, not an import")
    assert not _imported_modules(p)

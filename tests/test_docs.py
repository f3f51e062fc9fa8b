"""The guide cannot rot: every page's commands run, top to bottom, on the example data.

Each page of ``docs/`` (and the README after its first block, which ``.ci/run`` runs)
becomes one bash script, in a fresh folder holding a copy of ``configs/``, ``docs/``,
``jobs/`` and ``benchmarks/``:

- ```` ```bash ```` blocks run as written;
- ```` ```python ```` blocks run with this Python, in the same folder;
- ```` ```yaml file=NAME ```` blocks are written to NAME first (a config the next command uses);
- ```` ```bash no-run ```` / ```` ```python no-run ```` blocks are shown, not run: each must
  start with ``# not run by the tests:`` and why (a real cluster, a paid API key), so
  nothing is left out silently.

S3 commands reach a moto server through the standard ``AWS_ENDPOINT_URL`` variable,
with a bucket ``catalogue`` made for the page. ``docs/configuration.md`` must equal what
``python -m pipeline.config.doc`` writes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
NO_RUN = "# not run by the tests:"
COPIED = ("configs", "docs", "jobs", "benchmarks")


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(language, info after it, body) of each fenced block, in order."""
    return [(m[1], m[2].strip(), m[3]) for m in FENCE.finditer(text)]


def script(page: Path, workdir: Path) -> tuple[str, int]:
    """The page's blocks as one bash script; returns it and how many blocks run."""
    lines = ["set -euo pipefail"]
    ran = 0
    found = blocks(page.read_text())
    if page.name == "README.md":
        found = found[1:]  # the install and test commands: .ci/run runs them
    for k, (lang, info, body) in enumerate(found):
        if "no-run" in info.split():
            assert body.lstrip().startswith(NO_RUN), (
                f"{page.name}: a no-run block must start with {NO_RUN!r}:\n{body}"
            )
            continue
        if lang == "yaml" and info.startswith("file="):
            name = info.split("=", 1)[1].split()[0]
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).write_text(body)
            continue
        if lang == "bash":
            lines += [f"# --- {page.name} block {k}", body]
            ran += 1
        elif lang == "python":
            snippet = workdir / f"_snippet_{k}.py"
            snippet.write_text(body)
            lines += [f"# --- {page.name} block {k}", f"python {snippet.name}"]
            ran += 1
    return "\n".join(lines) + "\n", ran


PAGES = sorted([p for p in DOCS.glob("*.md")] + [ROOT / "README.md"], key=lambda p: p.name)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_of_the_page_runs(page, tmp_path, request):
    for name in COPIED:
        shutil.copytree(
            ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "results")
        )
    text, ran = script(page, tmp_path)
    if not ran:
        pytest.skip(f"{page.name} shows no command")
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONUNBUFFERED="1",
        HOME=str(tmp_path / "home"),
    )
    if "s3://" in text:
        import s3fs

        s3 = request.getfixturevalue("s3_server")
        opts = s3["storage_options"]
        fs = s3fs.S3FileSystem(**opts)
        if not fs.exists("catalogue"):
            fs.mkdir("catalogue")
        env.update(
            AWS_ENDPOINT_URL=s3["endpoint"],
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="eu-west-1",
        )
    (tmp_path / "home").mkdir()
    (tmp_path / "page.sh").write_text(text)
    proc = subprocess.run(
        ["bash", "page.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (
        f"{page.name}: a command failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
        f"{proc.stderr[-6000:]}"
    )


def test_configuration_page_is_what_the_generator_writes():
    from pipeline.config.doc import render

    assert (DOCS / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: python -m pipeline.config.doc > docs/configuration.md"
    )


def test_the_script_builder_runs_blocks_and_refuses_silent_skips(tmp_path):
    """The runner above would be hollow if it dropped blocks: check it on a page made here."""
    page = tmp_path / "p.md"
    page.write_text(
        "```bash\necho one\n```\n\n```yaml file=c.yaml\na: 1\n```\n\n```python\nprint(2)\n```\n\n"
        "```bash no-run\n# not run by the tests: needs a cluster\nray up\n```\n"
    )
    text, ran = script(page, tmp_path)
    assert (
        ran == 2 and "echo one" in text and "python _snippet_2.py" in text and "ray up" not in text
    )
    assert (tmp_path / "c.yaml").read_text() == "a: 1\n"
    page.write_text("```bash no-run\nray up\n```\n")
    with pytest.raises(AssertionError):
        script(page, tmp_path)


def test_the_readme_fits_on_a_screen_or_two():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move the detail into docs/"


def test_every_guide_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if f"docs/{p.name}" not in readme]
    assert not missing, f"pages the README does not link: {missing}"

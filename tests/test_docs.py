"""The docs stay true: links resolve, every flag shown for a ``python -m raydd.X`` command exists in that
command's real parser, results pages are what ``benchmarks/report.py`` makes of their committed JSON, the
README is a front door of at most 250 lines that holds CI's command literally, and every environment
variable the product reads is listed in ``docs/environment.md``."""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
README_MAX_LINES = 250

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"python3?\s+-m\s+(raydd(?:\.\w+)+)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Where a shell command ends on its line: a comment, a pipe, a list operator, or the next command.
COMMAND_END = re.compile(r"\s#|\|\||&&|[|;]|\bpython3?\s+-m\s")


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def split_code(markdown: str) -> tuple[list[str], list[str], str]:
    """Fenced code blocks, inline code spans, and the prose left when both are removed."""
    blocks = FENCE.findall(markdown)
    prose = FENCE.sub("", markdown)
    spans = INLINE_CODE.findall(prose)
    return blocks, spans, INLINE_CODE.sub("", prose)


def relative(path: Path) -> str:
    """A page's path from the repository root, as problems name it (a page outside the tree, as it is)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- links ---------------------------------------------------------------------------------------------


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", markdown), re.MULTILINE):
        text = re.sub(r"[`*_]", "", heading).lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def anchors_of(page: Path) -> set[str]:
    return heading_anchors(page.read_text(encoding="utf-8"))


def broken_links(page: Path) -> Iterator[str]:
    _, _, prose = split_code(page.read_text(encoding="utf-8"))
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not checked here
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            yield f"{relative(page)}: link {target} points at a file that does not exist"
        elif anchor and resolved.suffix == ".md" and resolved.exists() and anchor not in anchors_of(resolved):
            yield f"{relative(page)}: link {target} names an anchor that {relative(resolved)} has no heading for"


def test_every_relative_link_resolves() -> None:
    problems = [problem for page in doc_files() for problem in broken_links(page)]
    assert not problems, "\n".join(problems)


# --- flags of shown commands ---------------------------------------------------------------------------


def command_module(name: str) -> ModuleType:
    """``raydd.distill`` -> the module whose ``main`` ``python -m raydd.distill`` runs."""
    module = importlib.import_module(name)
    if not hasattr(module, "main") and hasattr(module, "__path__"):
        module = importlib.import_module(f"{name}.__main__")
    return module


@functools.cache
def parser_flags(name: str) -> frozenset[str]:
    """Every option string of ``python -m NAME``, read from what its own ``--help`` prints (argparse lists every
    option there, negated booleans included)."""
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
        command_module(name).main(["--help"])
    assert FLAG.search(help_text.getvalue()), f"python -m {name} --help lists no flag"
    return frozenset(FLAG.findall(help_text.getvalue()))


def shown_commands(page: Path) -> Iterator[tuple[str, list[str], str]]:
    """(command module, flags shown with it, the text shown) for every ``python -m raydd.X ...`` in a code
    block or inline code span of a page. A code block's lines ending in a backslash continue the command."""
    blocks, spans, _ = split_code(page.read_text(encoding="utf-8"))
    texts = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    texts += [" ".join(span.split()) for span in spans]
    for text in texts:
        for match in COMMAND.finditer(text):
            rest = text[match.end() :]
            end = COMMAND_END.search(rest)
            segment = rest[: end.start()] if end else rest
            yield match.group(1), FLAG.findall(segment), text.strip()


def unknown_flags(page: Path) -> Iterator[str]:
    for name, flags, text in shown_commands(page):
        try:
            known = parser_flags(name)
        except ModuleNotFoundError:
            yield f"{relative(page)}: `python -m {name}` is not a raydd command: {text}"
            continue
        for flag in flags:
            if flag not in known:
                yield f"{relative(page)}: python -m {name} has no {flag}: {text}"


def test_every_shown_flag_exists_in_its_command() -> None:
    """Every page but the dated reports: a report shows the commands as they ran at the commit it names, and a
    flag removed since (``--eval-protocol``, say) stays in its record."""
    pages = [page for page in doc_files() if page.parent != RESULTS]
    assert sum(1 for page in pages for _ in shown_commands(page)) > 50, "the docs should show the commands"
    problems = [problem for page in pages for problem in unknown_flags(page)]
    assert not problems, "\n".join(problems)


def test_the_flag_check_reads_the_real_parser() -> None:
    flags = parser_flags("raydd.distill")
    assert {"--lr-hal", "--no-use-gpu", "--print-config", "--help"} <= flags
    assert "--made-up-flag" not in flags
    assert "--study" in parser_flags("raydd.analyse") and "--study" not in flags


def test_a_made_up_flag_and_a_broken_link_are_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See [the missing page](missing.md) and [this page](#nowhere).\n\n"
        "```bash\npython -m raydd.distill --dataset k400 \\\n    --made-up-flag 3   # --in-a-comment\n```\n\n"
        "Or `python -m raydd.evaluate --runs 3 --lr-hal 1` and `python -m raydd.nosuch --x`.\n",
        encoding="utf-8",
    )
    assert len(list(broken_links(page))) == 2
    problems = list(unknown_flags(page))
    assert len(problems) == 3, problems
    assert "--made-up-flag" in problems[0] and "--lr-hal" in problems[1] and "raydd.nosuch" in problems[2]


# --- results reports -----------------------------------------------------------------------------------


def report_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_report", ROOT / "benchmarks" / "report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPORT_JSONS = sorted(RESULTS.glob("*.json"))


@pytest.mark.parametrize("json_path", REPORT_JSONS, ids=lambda path: path.stem)
def test_results_page_is_what_the_generator_makes_of_its_json(json_path: Path) -> None:
    page = json_path.with_suffix(".md")
    assert page.exists(), f"{relative(json_path)} has no page: python benchmarks/report.py --write docs/results"
    expected = report_module().render_file(json_path)
    assert page.read_text(encoding="utf-8") == expected, (
        f"{relative(page)} differs from its JSON: edit the JSON, then python benchmarks/report.py --write docs/results"
    )


def test_every_results_page_has_its_json() -> None:
    pages = [page for page in RESULTS.glob("*.md") if re.match(r"\d{4}-\d{2}-\d{2}-", page.name)]
    assert pages and all(page.with_suffix(".json").exists() for page in pages)


def test_readme_links_the_latest_report_of_each_topic() -> None:
    report = report_module()
    latest: dict[str, str] = {}
    for json_path in REPORT_JSONS:
        loaded = report.load_report(json_path)
        latest[loaded["topic"]] = max(latest.get(loaded["topic"], ""), json_path.stem)
    readme = README.read_text(encoding="utf-8")
    missing = [stem for stem in latest.values() if f"(docs/results/{stem}.md)" not in readme]
    assert not missing, f"README.md does not link the latest report of: {missing}"


def test_readme_main_job_table_is_the_recorded_one() -> None:
    latest = max(RESULTS.glob("*-main-job.json"))  # dated names sort by date
    recorded = report_module().load_report(latest)
    table = next(section["preformatted"] for section in recorded["sections"] if "preformatted" in section)
    assert table in README.read_text(encoding="utf-8")


# --- the README as a front door ------------------------------------------------------------------------


def test_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES


def test_readme_shows_ci_command_byte_for_byte() -> None:
    """CI runs README command (b) literally: the command line in ``.ci/run`` is a line of the README."""
    ci_command = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci_command in README.read_text(encoding="utf-8").splitlines()


# --- environment variables -----------------------------------------------------------------------------

ENV_READ = re.compile(r"""(?:environ\.get|environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")
ENV_CONSTANT = re.compile(r"""^[A-Z_]*(?:VARIABLE|_ENV)\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.MULTILINE)


def variables_read_by_raydd() -> set[str]:
    names: set[str] = set()
    for source in (ROOT / "raydd").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        names |= set(ENV_READ.findall(text)) | set(ENV_CONSTANT.findall(text))
    return names


def test_every_environment_variable_raydd_reads_is_documented() -> None:
    names = variables_read_by_raydd()
    assert {"RAYDD_STORE", "RAYDD_CACHE", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"} <= names
    _, spans, _ = split_code((DOCS / "environment.md").read_text(encoding="utf-8"))
    documented = {span.split("=")[0] for span in spans}
    assert not names - documented, f"docs/environment.md does not list {sorted(names - documented)}"

"""Nothing in the repository names a document it does not hold: every `*.md` path written in code, help
texts, configuration or the documents themselves exists (relative to the repository or to the file)."""

from __future__ import annotations

import re
import subprocess

from tests.services import ROOT

MD_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
URL = re.compile(r"https?://\S+")
# Names that are data, not references: .dockerignore's tests match made-up paths against its patterns.
NOT_REFERENCES = {"tests/test_deploy_context.py": {"docs/a.md", "docs/x/y/a.md"},
                  "tests/test_docs_links.py": {"docs/a.md", "docs/x/y/a.md"}}
TEXT_SUFFIXES = (".py", ".md", ".proto", ".yaml", ".yml", ".sh", ".toml", ".txt", ".json", ".cfg", ".ini")


def tracked_text_files() -> list[str]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if n.endswith(TEXT_SUFFIXES) or n in ("Makefile",) or n.endswith("Dockerfile")
            or n.startswith(".ci/")]


def named_documents(text: str) -> set[str]:
    return set(MD_PATH.findall(URL.sub(" ", text)))


def test_every_named_markdown_document_exists():
    missing = []
    for name in tracked_text_files():
        path = ROOT / name
        if not path.is_file():
            continue
        for document in named_documents(path.read_text(errors="replace")) - NOT_REFERENCES.get(name, set()):
            if not ((ROOT / document).exists() or (path.parent / document).exists()):
                missing.append(f"{name} names {document}")
    assert not missing, "\n".join(sorted(missing))


def test_the_check_finds_paths_in_prose_and_links():
    # The check itself must see the forms documents are named in, or it proves nothing.
    text = "see docs/protocol.md, (README.md), [x](../docs/deployment.md) and https://x.org/a.md"
    assert named_documents(text) == {"docs/protocol.md", "README.md", "../docs/deployment.md"}

"""The README and the design page link only to files that are in the repository."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("page", ["README.md", "docs/DESIGN.md", "service/README.md"])
def test_relative_links_point_at_files_in_the_repository(repo_root, page):
    text = (repo_root / page).read_text()
    links = [target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)]
    local = [t for t in links if t and not re.match(r"[a-z]+://", t)]
    missing = [t for t in local if not ((repo_root / page).parent / t).exists()]
    assert not missing, f"{page} links to files that do not exist: {missing}"
    if page == "README.md":
        assert "docs/DESIGN.md" in local

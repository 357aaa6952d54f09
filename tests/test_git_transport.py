"""GitTransport against a real bare repository on disk as the remote."""

from __future__ import annotations

import pytest

from publisher.cli import main
from publisher.pipeline import load, render
from publisher.push import push_issue
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.transports.git import INDEX_END, INDEX_START, update_index
from tests.push_support import PNG, add_config, git, make_remote, write_issue


@pytest.fixture
def archive(project, tmp_path):
    bare, clone = make_remote(tmp_path / "git")
    add_config(project, f"""
[github]
repo_path = "{clone}"
archive_folder = "embedded-ai-report"
index_file = "README.md"
push = true
""")
    return bare, clone


def remote_log(bare):
    return git(bare, "log", "--format=%s", "master").splitlines()


def test_commit_content_message_index_and_push(project, archive):
    bare, clone = archive
    issue = write_issue(project / "issues", "2026-01-05", image=True)
    settings = load_settings()

    assert main(["push", str(issue), "--channel", "github"]) == 0

    # the remote got exactly one new commit with the clear message
    assert remote_log(bare) == ["Publish 嵌入式AI简报 (2026-01-05)", "initial"]
    files = set(git(bare, "show", "--name-only", "--format=", "master").splitlines())
    assert files == {"README.md", "embedded-ai-report/2026-01-05.md", "embedded-ai-report/img/2026-01-05.png"}
    # the committed page is the github rendition, byte for byte; the image is beside it
    expected = render(load(issue)[0], "github", settings).body
    assert git(bare, "show", "master:embedded-ai-report/2026-01-05.md") == expected.strip("\n")
    assert (clone / "embedded-ai-report" / "img" / "2026-01-05.png").read_bytes() == PNG
    # the index: hand-written part untouched, generated block links the issue
    readme = git(bare, "show", "master:README.md")
    assert readme.startswith("# Archive\n\nHand-written introduction.\n")
    assert INDEX_START in readme and INDEX_END in readme
    assert "[5](embedded-ai-report/2026-01-05.md)" in readme
    assert "| 2026 |" in readme
    # the ledger: done, commit id as remote id
    record = Ledger(settings.path("paths", "ledger")).get("2026-01-05", "github")
    assert record.state == "done" and record.attempts == 1
    assert record.remote_id == git(bare, "rev-parse", "master")
    assert record.details["committed"] is True and record.details["pushed"] is True


def test_second_push_without_change_makes_no_commit(project, archive, capsys):
    bare, clone = archive
    issue = write_issue(project / "issues", "2026-01-05")
    assert main(["push", str(issue), "-c", "github"]) == 0
    head = git(bare, "rev-parse", "master")

    assert main(["push", str(issue), "-c", "github", "--force"]) == 0
    assert git(bare, "rev-parse", "master") == head
    assert len(remote_log(bare)) == 2
    assert "nothing to commit" in capsys.readouterr().out
    record = Ledger(project / "publisher.db").get("2026-01-05", "github")
    assert record.state == "done" and record.attempts == 2
    assert record.details["committed"] is False
    assert git(clone, "status", "--porcelain") == ""


def test_index_regenerated_for_every_issue_rest_of_file_kept(project, archive):
    bare, clone = archive
    first = write_issue(project / "issues", "2026-01-05")
    assert main(["push", str(first), "-c", "github"]) == 0
    # an editor adds text after the generated block
    readme = clone / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\n## License\n\nCC BY-SA\n", encoding="utf-8")
    git(clone, "commit", "--quiet", "-am", "license")
    git(clone, "push", "--quiet", "origin", "master")

    second = write_issue(project / "issues", "2026-02-09")
    assert main(["push", str(second), "-c", "github"]) == 0
    text = git(bare, "show", "master:README.md")
    assert "[5](embedded-ai-report/2026-01-05.md)" in text
    assert "[9](embedded-ai-report/2026-02-09.md)" in text
    assert text.count(INDEX_START) == 1 and text.count(INDEX_END) == 1
    assert text.startswith("# Archive\n\nHand-written introduction.\n")
    assert text.rstrip().endswith("## License\n\nCC BY-SA")
    assert remote_log(bare)[0] == "Publish 嵌入式AI简报 (2026-02-09)"


def test_update_index_replaces_only_the_block():
    before = f"intro\n\n{INDEX_START}\nold table\n{INDEX_END}\n\nafter\n"
    after = update_index(before, "new table", "t")
    assert after == f"intro\n\n{INDEX_START}\nnew table\n{INDEX_END}\n\nafter\n"
    assert update_index("", "x", "Title").startswith("# Title\n\n" + INDEX_START)
    assert update_index("plain\n", "x", "t") == f"plain\n\n{INDEX_START}\nx\n{INDEX_END}\n"


def test_not_a_git_repository_is_a_transport_error(project, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    add_config(project, f'[github]\nrepo_path = "{tmp_path / "plain"}"\n')
    issue = write_issue(project / "issues", "2026-01-05")
    assert main(["push", str(issue), "-c", "github"]) == 1
    err = capsys.readouterr().err
    assert "not a git repository" in err
    record = Ledger(project / "publisher.db").get("2026-01-05", "github")
    assert record.state == "failed" and "not a git repository" in record.last_error


def test_push_rejected_reports_gits_message(project, archive, tmp_path):
    bare, clone = archive
    # someone else pushes first: our clone is behind, the push is rejected
    other = tmp_path / "other"
    git(tmp_path, "clone", "--quiet", str(bare), str(other))
    git(other, "-c", "user.name=o", "-c", "user.email=o@example.org", "commit", "--quiet",
        "--allow-empty", "-m", "elsewhere")
    git(other, "push", "--quiet", "origin", "master")

    issue = write_issue(project / "issues", "2026-01-05")
    settings = load_settings()
    report = push_issue(settings, issue, ["github"])
    assert [o.state for o in report.outcomes] == ["failed"]
    assert "git push failed" in report.outcomes[0].message
    assert "rejected" in report.outcomes[0].message
    # committed locally; after pulling, a re-run pushes without a new commit
    git(clone, "pull", "--quiet", "--rebase", "origin", "master")
    report = push_issue(settings, issue, ["github"])
    assert [o.state for o in report.outcomes] == ["done"]
    assert remote_log(bare)[:2] == ["Publish 嵌入式AI简报 (2026-01-05)", "elsewhere"]


def test_dry_run_touches_nothing(project, archive):
    bare, clone = archive
    issue = write_issue(project / "issues", "2026-01-05")
    head = git(bare, "rev-parse", "master")
    assert main(["push", str(issue), "-c", "github", "--dry-run"]) == 0
    assert git(bare, "rev-parse", "master") == head
    assert not (clone / "embedded-ai-report").exists()
    assert git(clone, "status", "--porcelain") == ""
    assert Ledger(project / "publisher.db").records() == []


def test_wrong_branch_is_refused(project, archive):
    bare, clone = archive
    text = (project / "publisher.toml").read_text(encoding="utf-8").replace(
        "push = true", 'push = true\nbranch = "main"')
    (project / "publisher.toml").write_text(text, encoding="utf-8")
    issue = write_issue(project / "issues", "2026-01-05")
    report = push_issue(load_settings(), issue, ["github"])
    assert report.outcomes[0].state == "failed"
    assert "[github] branch is 'main'" in report.outcomes[0].message


def test_corpus_issues_pushed_everywhere_without_an_api(project, archive, corpus_dir):
    from publisher.legacy import import_file

    bare, clone = archive
    sources = sorted(corpus_dir.glob("*.md"))[-3:]
    for source in sources:
        import_file(source, project / "issues")
    add_config(project, '[channels]\nenabled = ["github", "zhihu", "aijishu", "plaintext"]\n')
    for path in sorted((project / "issues").glob("*.md")):
        assert main(["push", str(path), "--all"]) == 0
    slugs = [p.stem for p in sorted((project / "issues").glob("*.md"))]
    assert remote_log(bare)[:3] == [f"Publish 嵌入式AI简报 ({s})" for s in reversed(slugs)]
    readme = git(bare, "show", "master:README.md")
    for slug in slugs:
        assert f"(embedded-ai-report/{slug}.md)" in readme
        assert sorted(p.name for p in (project / "outbox" / slug).glob("*.*")) == [
            "aijishu.md", "plaintext.txt", "zhihu.md"]
    ledger = Ledger(project / "publisher.db")
    assert {(r.issue, r.state) for r in ledger.records()} == {(s, "done") for s in slugs}

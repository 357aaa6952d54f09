"""The web channel's transport: publish the static site to a folder, or commit it to a branch.

A rendition's files (images, pages, then index.html, feed.xml and sitemap.xml last, so an index
never links to a page that is not there yet) go either

- into `[web] folder`: each file written atomically, and only when its bytes changed; or
- when `[web] repo_path` is set, onto `[web] branch` (default gh-pages) of that repository, with
  git's plumbing (a temporary index read from the branch, the changed files added, write-tree,
  commit-tree, update-ref): the working tree and the checked-out branch are never touched, the
  repository may be bare, and a push that changes nothing makes no commit. With `[web] push`, the
  branch is then pushed to `[web] remote` (also when nothing was committed, so a failed push is
  retried by re-running).

Every path is checked to stay inside the site; the rendition is never re-rendered here.
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path

from publisher.channels.base import Rendition

from publisher.atomic import atomic_write, write_if_changed
from publisher.errors import TransportError
from publisher.settings import Settings
from publisher.transports.base import PushContext, PushResult, Transport
from publisher.transports.git import git


def site_files(rendition: Rendition) -> list[tuple[str, bytes]]:
    """(path inside the site, bytes) of every file of the rendition, in the order they are
    published: images, pages, the rendition's own page, then the site-level files."""
    site_level = set(rendition.metadata.get("site_files", ()))
    files: list[tuple[str, bytes]] = []
    for image in rendition.images:
        if image.data is None and (image.path is None or not image.path.is_file()):
            raise TransportError(f"image {image.ref} of issue {rendition.issue}: file {image.path} does not exist")
        files.append((image.ref, image.read()))
    files += [(n, t.encode("utf-8")) for n, t in rendition.parts.items() if n not in site_level]
    files += list(rendition.binary_parts.items())
    files.append((rendition.filename, rendition.body.encode("utf-8")))
    files += [(n, rendition.parts[n].encode("utf-8")) for n in rendition.parts if n in site_level]
    for name, _ in files:
        norm = posixpath.normpath(name)
        if name != norm or norm.startswith(("../", "/")) or norm in ("..", ".") or "\\" in name or ":" in name:
            raise TransportError(f"the web rendition of {rendition.issue} names the file {name!r}, which is not "
                                 "a plain path inside the site; nothing was published")
    return files


def _setting_path(settings: Settings, key: str) -> Path:
    value = Path(str(settings["web"][key])).expanduser()
    return value if value.is_absolute() else settings.root / value


class WebTransport(Transport):
    channel = "web"

    def push(self, rendition: Rendition, ctx: PushContext) -> PushResult:
        files = site_files(rendition)
        url = rendition.metadata.get("url")
        if ctx.settings["web"]["repo_path"]:
            return self._to_branch(files, rendition, ctx, url)
        return self._to_folder(files, ctx, url)

    def _to_folder(self, files: list[tuple[str, bytes]], ctx: PushContext, url: str | None) -> PushResult:
        ctx.settings.require("web", "folder", "where the site is written")
        root = _setting_path(ctx.settings, "folder")
        if ctx.dry_run:
            return PushResult(url=url, summary=f"would write {len(files)} file(s) of the site into {root}")
        changed = []
        try:
            for name, data in files:
                if write_if_changed(root / name, data, fsync=True):
                    changed.append(name)
        except OSError as exc:
            raise TransportError(f"cannot write the site into {root}: {exc.strerror or exc}") from None
        return PushResult(url=url, summary=f"site in {root}: {len(changed)} file(s) changed, "
                          f"{len(files) - len(changed)} unchanged", details={"folder": str(root), "changed": changed})

    def _to_branch(self, files: list[tuple[str, bytes]], rendition: Rendition, ctx: PushContext,
                   url: str | None) -> PushResult:
        web = ctx.settings["web"]
        repo = _setting_path(ctx.settings, "repo_path")
        if not repo.is_dir():
            raise TransportError(f"[web] repo_path {repo} does not exist (set in {ctx.settings.where()}); "
                                 "clone the site's repository there")
        branch = ctx.settings.require("web", "branch", "the branch the site is committed to")
        ref = f"refs/heads/{branch}"
        if git(repo, "check-ref-format", ref, check=False).returncode != 0:
            raise TransportError(f"[web] branch = {branch!r} is not a valid branch name")
        message = f"Publish {ctx.settings['newsletter']['name']} ({rendition.issue}) to the web"
        if ctx.dry_run:
            return PushResult(url=url, summary=f"would commit {len(files)} file(s) of the site to {branch} in {repo}"
                              + (f" and push to {web['remote']}" if web["push"] else ""))
        parent = git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).stdout.strip()
        with tempfile.TemporaryDirectory(prefix="publisher-web-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            work = Path(tmp) / "site"
            if parent:
                git(repo, "read-tree", parent, env=env)
            for name, data in files:
                atomic_write(work / name, data)
            names = [name for name, _ in files]
            git(repo, f"--work-tree={work}", "add", "--force", "--", *names, env=env)
            tree = git(repo, "write-tree", env=env).stdout.strip()
        old_tree = git(repo, "rev-parse", f"{parent}^{{tree}}").stdout.strip() if parent else ""
        committed = tree != old_tree
        changed: list[str] = []
        if committed:
            if parent:
                changed = git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", old_tree, tree
                              ).stdout.split()
            else:
                changed = names
            args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
            commit = git(repo, *args).stdout.strip()
            # compare-and-swap: fails if someone moved the branch meanwhile (re-run to retry)
            git(repo, "update-ref", "-m", message, ref, commit, parent or "0" * len(commit))
        else:
            commit = parent
        pushed = False
        if web["push"]:
            git(repo, "push", "--quiet", web["remote"], f"{ref}:{ref}")
            pushed = True
        summary = (f"committed {commit[:10]} on {branch} ({len(changed)} file(s) changed)" if committed
                   else f"site unchanged on {branch} (at {commit[:10]})")
        if pushed:
            summary += f", pushed to {web['remote']}/{branch}"
        return PushResult(remote_id=commit, url=url, summary=summary,
                          details={"commit": commit, "committed": committed, "pushed": pushed, "branch": branch,
                                   "changed": changed})

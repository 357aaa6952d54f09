"""The non-editable install works: the wheel is built, installed into a fresh virtual environment
(with its dependencies, as a user gets them), and every command runs from another directory, so the
source tree cannot stand in for the installed package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel installed; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)])
    assert built.returncode == 0, built.stderr
    wheels = list(dist.glob("publisher-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    pip = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheels[0])])
    if pip.returncode != 0 and "Could not find a version" in pip.stderr + pip.stdout:
        pytest.skip(f"dependencies cannot be installed from the package index here: {pip.stderr[-300:]}")
    assert pip.returncode == 0, pip.stderr
    return bin_dir


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PUBLISHER_CONFIG", "PYTHONPATH")}
    env["PYTHONSAFEPATH"] = "1"
    return env


def _subcommands(help_text: str) -> list[str]:
    section = help_text.split("Commands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^\s{2}(\S+)", section, re.M)]


@pytest.mark.slow
def test_every_command_of_the_installed_package_runs(installed: Path, tmp_path: Path) -> None:
    exe = str(installed / "publisher")
    top = _run([exe, "--help"], cwd=tmp_path, env=_env())
    assert top.returncode == 0, top.stderr
    commands = _subcommands(top.stdout)
    for expected in ["build", "check", "import", "preview", "push", "render", "schedule", "serve", "status",
                     "subscribers"]:
        assert expected in commands, top.stdout
    for name in commands:
        sub = _run([exe, name, "--help"], cwd=tmp_path, env=_env())
        assert sub.returncode == 0, f"publisher {name} --help: {sub.stderr[-800:]}"
        assert "Usage:" in sub.stdout and "Traceback" not in sub.stderr
    as_module = _run([str(installed / "python"), "-m", "publisher", "--help"], cwd=tmp_path, env=_env())
    assert as_module.returncode == 0, as_module.stderr
    assert as_module.stdout == top.stdout


@pytest.mark.slow
def test_installed_package_renders_and_builds_the_example_from_elsewhere(installed: Path, tmp_path: Path) -> None:
    exe = str(installed / "publisher")
    where = _run([str(installed / "python"), "-c", "import publisher; print(publisher.__file__)"],
                 cwd=tmp_path, env=_env())
    assert str(installed.parent) in where.stdout, "the test must run the installed package, not the source tree"
    config = str(EXAMPLES / "publisher.toml")
    render = _run([exe, "--config", config, "render", str(EXAMPLES / "issues" / "2026-11-23.md"),
                   "--channel", "github"], cwd=tmp_path, env=_env())
    assert render.returncode == 0, render.stderr
    assert render.stdout.startswith("---\nlayout: default")
    out = tmp_path / "out"
    build = _run([exe, "--config", config, "build", "--out", str(out), "--force"], cwd=tmp_path, env=_env())
    assert build.returncode == 0, build.stderr
    for channel, suffix in [("github", ".md"), ("wechat", ".html"), ("email", ".html"), ("zhihu", ".md"),
                            ("aijishu", ".md"), ("plaintext", ".txt")]:
        assert (out / channel / f"2026-11-23{suffix}").is_file(), build.stdout


@pytest.mark.slow
def test_installed_package_ships_the_program_pages(installed: Path, tmp_path: Path) -> None:
    """The preview page, its CSS and JS, the unsubscribe pages and the archive calendar are
    template files (templates/preview/, serve/, github/index.md): the wheel must carry them."""
    (tmp_path / "publisher.toml").write_text(
        f'[paths]\nissues = "{(EXAMPLES / "issues").as_posix()}"\nout = "out"\n', encoding="utf-8")
    preview = _run([str(installed / "publisher"), "preview", "--no-open", "-c", "plaintext"], cwd=tmp_path,
                   env=_env())
    assert preview.returncode == 0, preview.stderr
    page = Path(preview.stdout.strip()).read_text(encoding="utf-8")
    assert "nav.tabs button.on" in page and "new EventSource(" in page  # the CSS and the script, inlined
    check = ("import datetime as dt\n"
             "from publisher.channels.base import builtin_env\n"
             "from publisher.transports.git import index_block\n"
             "print(index_block([(dt.date(2026, 11, 23), '2026-11-23.md')], 'X', channel='github'))\n"
             "print(builtin_env().get_template('serve/unsubscribe.html').render(page='invalid', name='n'))\n")
    shipped = _run([str(installed / "python"), "-c", check], cwd=tmp_path, env=_env())
    assert shipped.returncode == 0, shipped.stderr
    assert "共 1 期X。" in shipped.stdout and "| 2026 |" in shipped.stdout and "[23](2026-11-23.md)" in shipped.stdout
    assert "<title>链接无效</title>" in shipped.stdout


QUICK_START = "## Quick start: your own newsletter, from pip"
FOREIGN = ("NeuralTalk", "ysh329", "example.org", "嵌入式AI")


def quick_start_commands() -> tuple[str, list[str]]:
    """The README's quick start as written: (its install line, then every other command in order;
    a heredoc stays one command with its body)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(QUICK_START, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    install, rest = blocks[0].strip(), "".join(blocks[1:])
    commands: list[str] = []
    lines = iter(rest.splitlines())
    for line in lines:
        if not line.strip():
            continue
        heredoc = re.search(r"<<'(\w+)'", line)
        if heredoc:
            body = [line]
            for more in lines:
                body.append(more)
                if more == heredoc.group(1):
                    break
            line = "\n".join(body)
        commands.append(line)
    return install, commands


@pytest.mark.slow
def test_the_readme_quick_start_works_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """Issue 25's "done when": the wheel in a fresh venv (the README's `pip install publisher`; no
    package index here, so the fixture installs the built wheel), then the README's quick start
    command by command in an empty folder — init, check, preview --no-open, build, push --dry-run,
    a real email push to aiosmtpd (the README's [smtp] host and port pointed at it, its self-signed
    certificate trusted through SSL_CERT_FILE; the README's username and password are the ones the
    server demands), status --format json — and no other newsletter's value in any output."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from tests.email_support import Handler, free_port, make_cert

    install, commands = quick_start_commands()
    assert re.search(r"pip install publisher\b", install), install
    joined = "\n".join(commands)
    for step in ("publisher init", "publisher check", "publisher preview --no-open", "publisher build",
                 "--dry-run", "[smtp]", "publisher status --format json"):
        assert step in joined, step
    user = re.search(r'^username = "([^"]+)"', joined, re.M).group(1)
    password = re.search(r"^export PUBLISHER_SMTP_PASSWORD='([^']+)'", joined, re.M).group(1)

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.login == user.encode() and auth_data.password == password.encode(),
                          handled=False)

    import ssl

    cert, key = make_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
                            authenticator=authenticator, auth_required=True, auth_require_tls=True)
    controller.start()
    try:
        work = tmp_path / "empty"
        work.mkdir()
        state = tmp_path / "state.sh"
        state.write_text("", encoding="utf-8")
        env = {**_env(), "PATH": f"{installed}:{os.environ['PATH']}", "SSL_CERT_FILE": str(cert),
               "HOME": str(tmp_path), "NO_COLOR": "1"}
        outputs: dict[str, subprocess.CompletedProcess] = {}
        for command in commands:
            if command.startswith("cat >> publisher.toml"):
                command = re.sub(r'^host = ".*"$', 'host = "127.0.0.1"', command, flags=re.M)
                command = re.sub(r"^port = \d+$", f"port = {port}", command, flags=re.M)
            # each command in bash, as typed: the working folder and exports carry over
            script = f'. "{state}"\n{command}\nrc=$?\nexport -p > "{state}"\necho "cd \\"$PWD\\"" >> "{state}"\nexit $rc\n'
            proc = _run(["bash", "-c", script], cwd=work, env=env)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            for word in FOREIGN:
                assert word not in proc.stdout + proc.stderr, (command, word, proc.stdout + proc.stderr)
            outputs[command.split("#")[0].strip()] = proc
    finally:
        controller.stop()
    project = work / "mynews"
    assert (project / "publisher.toml").is_file()
    preview = next(p for c, p in outputs.items() if "preview --no-open" in c)
    assert Path(preview.stdout.strip()).is_file()
    # the real email: one message to the one subscriber, over STARTTLS with AUTH
    assert len(handler.messages) == 1, handler.messages
    message = handler.messages[0]
    assert message.tls and message.auth and message.rcpts == ["first.reader@mydomain.example"]
    raw = message.data.decode("utf-8", "replace")
    for word in FOREIGN:
        assert word not in raw, word
    status = json.loads(outputs["publisher status --format json"].stdout)
    assert status["config"] == str(project / "publisher.toml")
    (push,) = [r for r in status["pushes"] if r["channel"] == "email"]
    assert push["state"] == "done" and push["counts"]["sent"] == 1
    assert all(type(v) is int for v in push["counts"].values()), push["counts"]  # numbers, not prose
    for path in (project / "build").rglob("*"):
        if path.is_file() and path.suffix in (".html", ".txt", ".md", ".xml"):
            text = path.read_text(encoding="utf-8")
            assert not [w for w in FOREIGN if w in text], path

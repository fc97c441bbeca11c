"""Every command README.md shows is run, in the README's order, as one scripted session.

The `sh` code blocks are read out of README.md; each `fedledger …` line runs against a devnet on a
free port (`FEDLEDGER_DEVNET_PORT`) under a temporary `FEDLEDGER_HOME`, with the blob service on a
free port instead of 8600 and small rounds (`--rounds 1`, demos with `--epochs 1`). A line ending in
`&` runs in the background as a separate process; servers (`api serve`, `index run --follow`) are
waited for until they answer, as a person would before typing the next line, and stopped at the end
of their code block; other background commands must exit 0 by then. Every other line runs in this
process through `ledger.cli.main` and must exit 0 (or the exit code its comment names).

Handled without running them (the report says so):
- `make demo|test|bench`: the Makefile target must exist and run the documented `fedledger`
  commands, each of which must parse; running `make test` inside `make test` would recurse, and
  the commands `make demo` runs are the README's own demo lines, run here.
- `fedledger contracts build` must parse; it rewrites the checkout's artifact, and the compile it
  runs is exercised by `contracts check` in test_wheel.py.
- A foreground `fedledger aggregator run` shown as an example of its options (no devnet runs at that
  point of the README, and it would wait for nodes forever) must parse; the by-hand federation runs
  the aggregator for real.
- The "Your own model" block installs a package: test_your_own_model.py runs it in a fresh virtualenv.
- The "Deploying a model" block exports a version of a finished federation: test_export.py runs it
  as printed, from the directory whose var/ holds one.
- Demo lines are shrunk to `--rounds 1 --epochs 1` and run with `--chain memory`, so their options
  are exercised without starting seven processes each; the anvil wiring they share runs in
  test_demo.py (separate node processes, a tampering node caught on chain, int8 updates).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.core.polling import free_port, poll_until, wait_for_port

pytestmark = pytest.mark.devnet

ROOT = Path(__file__).resolve().parent.parent
SERVERS = (("api", "serve"), ("index", "run"))
EXPECTED_EXIT = {("round", "abandon"): 1}  # README: "exit 1 here: only an open round past its deadline"
# README blocks another test runs as written: installing a package in a fresh virtualenv is its job.
COVERED_ELSEWHERE = {"### Your own model": "tests/test_your_own_model.py", "## Deploying a model": "tests/test_export.py"}
PROCESS_TIMEOUT = 300.0


@dataclass(frozen=True)
class Line:
    words: list[str]
    background: bool


def readme_blocks(text: str) -> list[list[Line]]:
    """The commands of every ```sh block, comments stripped, continuation lines joined (but the
    blocks another test runs as written, in their own setting: see `COVERED_ELSEWHERE`)."""
    for heading in COVERED_ELSEWHERE:
        start = text.index(heading)
        end = text.index("```", text.index("```sh", start) + 5) + 3
        text = text[:start] + text[end:]
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        lines, pending = [], ""
        for raw in body.splitlines():
            code = re.sub(r"\s+#.*$", "", raw).rstrip()
            if code.endswith("\\"):
                pending += code[:-1] + " "
                continue
            code, pending = (pending + code).strip(), ""
            if not code:
                continue
            background = code.endswith("&")
            lines.append(Line(shlex.split(code.rstrip("&").strip()), background))
        blocks.append(lines)
    return blocks


def test_readme_shows_the_commands_this_test_runs() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    words = [line.words for block in blocks for line in block]
    assert ["make", "demo"] in words and ["make", "test"] in words
    assert all(w[0] in (".venv/bin/fedledger", "make") for w in words), [w for w in words if w[0] not in (".venv/bin/fedledger", "make")]
    documented = {tuple(w[1:3]) for w in words if w[0] != "make"}
    for command in (("round", "status"), ("round", "abandon"), ("node", "register"), ("keys", "new"), ("versions",)):
        assert any(d[: len(command)] == command for d in documented), f"README shows no `fedledger {' '.join(command)}`"


@dataclass
class Session:
    tmp: Path
    api_port: int

    def rewrite(self, words: list[str]) -> list[str]:
        words = [w.replace("127.0.0.1:8600", f"127.0.0.1:{self.api_port}") for w in words]
        words = ["1" if previous == "--rounds" else w for previous, w in zip([""] + words, words)]
        if words[:2] == ["api", "serve"] and "--port" not in words:
            words += ["--port", str(self.api_port)]
        if words[:1] == ["demo"]:
            words += ["--rounds", "1", "--epochs", "1", "--chain", "memory"]
        return words


def run_here(words: list[str]) -> tuple[int, str, str]:
    """`fedledger WORDS` in this process, its output captured."""
    from ledger.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(words)
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def check_make_target(target: str) -> None:
    """The target exists, and every `fedledger` command its recipe runs parses."""
    from ledger.cli.main import build_parser

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)*)", makefile, re.MULTILINE)
    assert recipe is not None, f"README runs `make {target}`, the Makefile has no such target"
    for command in re.findall(r"\$\(BIN\)/fedledger ([^\n;&|]+)", recipe.group(1)):
        words = shlex.split(command)
        build_parser(words[0]).parse_args(words)  # exits 2 on an undocumented option
    if target == "demo":
        assert "fedledger demo" in recipe.group(1)
    if target == "test":
        assert {"test-contracts", "lint", "test-python"} <= set(recipe.group(0).split(":")[1].split())


def test_every_readme_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger.chain.devnet import Devnet

    port = free_port()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("FEDLEDGER_DEVNET_PORT", str(port))
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "correct horse battery staple")
    for name in ("FEDLEDGER_RPC_URL", "FEDLEDGER_CONTRACT", "FEDLEDGER_STORE_URL", "FEDLEDGER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    session = Session(tmp_path, free_port())
    ran: list[str] = []
    try:
        for block in readme_blocks((ROOT / "README.md").read_text(encoding="utf-8")):
            background: list[tuple[list[str], subprocess.Popen[bytes], Path]] = []
            try:
                for line in block:
                    started = time.monotonic()
                    if line.words[0] == "make":
                        check_make_target(line.words[1])
                        ran.append(" ".join(line.words) + " (target checked)")
                        continue
                    words = session.rewrite(line.words[1:])
                    if words[:2] == ["contracts", "build"] or (words[:2] == ["aggregator", "run"] and not line.background):
                        from ledger.cli.main import build_parser

                        build_parser(words[0]).parse_args(words)
                        ran.append(" ".join(words[:2]) + " (parsed)")
                        continue
                    if line.background:
                        background.append(_start(session, words, len(ran)))
                    else:
                        code, out, err = run_here(words)
                        expected = EXPECTED_EXIT.get(tuple(words[:2]), 0)
                        assert code == expected, f"`fedledger {' '.join(words)}` exited {code}:\n{out}\n{err}"
                        if expected:
                            assert len(err.strip().splitlines()) == 1, err
                        _check_output(words, out, err)
                    ran.append(f"{' '.join(words)} ({time.monotonic() - started:.1f} s)")
            finally:
                _finish_block(background)
    finally:
        Devnet(port=port, state_dir=tmp_path / "var" / "devnet").stop()
    assert len(ran) >= 30, ran
    print("\n".join(ran))  # with -s: what ran, and what each line cost


def _start(session: Session, words: list[str], number: int) -> tuple[list[str], subprocess.Popen[bytes], Path]:
    log = session.tmp / f"background-{number}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", *words], stdout=handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=dict(os.environ), cwd=session.tmp,
        )  # fmt: skip
    if tuple(words[:2]) == ("api", "serve"):
        wait_for_port("127.0.0.1", session.api_port, timeout=PROCESS_TIMEOUT)
    elif tuple(words[:2]) == ("index", "run"):
        poll_until(lambda: b"following ledger" in log.read_bytes() or process.poll() is not None,
                   timeout=PROCESS_TIMEOUT, interval=0.1, what="the indexer")  # fmt: skip
    assert process.poll() is None, f"`fedledger {' '.join(words)}` exited {process.returncode}:\n{log.read_text()}"
    return words, process, log


def _finish_block(background: list[tuple[list[str], subprocess.Popen[bytes], Path]]) -> None:
    """Servers are stopped; every other background command must have finished with exit 0."""
    failures = []
    for words, process, log in background:
        if tuple(words[:2]) in SERVERS:
            continue
        try:
            code = process.wait(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            failures.append(f"`fedledger {' '.join(words)}` exited {code}:\n{log.read_text()[-3000:]}")
    for words, process, log in background:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for _, process, _ in background:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert not failures, "\n".join(failures)


def _check_output(words: list[str], out: str, err: str) -> None:
    """A few documented promises about what the commands print."""
    import json

    if "--json" in words:
        json.loads(out)
    if words[:2] == ["keys", "new"] and "--signing" not in words:
        assert re.fullmatch(r"0x[0-9a-fA-F]{40}\n", out), out  # only the address
        assert (Path(words[words.index("--out") + 1]).stat().st_mode & 0o777) == 0o600
    if words[:2] == ["audit", "verify"]:
        assert out.startswith("VERIFIED"), out
    if words[:1] == ["demo"] and "--json" not in words:
        assert "lineage (genesis → latest):" in out, out

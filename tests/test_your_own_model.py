"""README's "Your own model", run as written: a `task new` package in a fresh virtualenv, federated on anvil.

The virtualenv lives outside the repository and has fedledger installed from its wheel (built from
this checkout) and the user's task installed editable, as the README says. To stay fast it copies
no heavy dependency: a `.pth` file points at this test run's site-packages (torch, web3, pip,
setuptools, pytest) and `bin/pip` launches that pip (`support.fresh_virtualenv`). Every README
command then runs in a scratch folder with these substitutions only:
`.venv/bin/` → the fresh virtualenv's `bin/`; the devnet and the ledger service on free ports
(`FEDLEDGER_DEVNET_PORT`, `FEDLEDGER_RPC_URL`, `127.0.0.1:8600` → the free port); anvil from this
checkout (`FEDLEDGER_ANVIL`, since an installed wheel has no `hardhat-free-devnet/`). A command
ending in `&` runs in the background; the test waits for the service's port after `api serve &`,
and for the background roles to finish before `audit verify`, as a person at a terminal would.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from support import ROOT, fresh_virtualenv

from ledger.chain.devnet import anvil_binary
from ledger.core.polling import free_port, wait_for_port

COMMAND_TIMEOUT = 120
ROLE_TIMEOUT = 120


def readme_commands(heading: str) -> list[str]:
    """The shell commands of the first ```sh block under `heading`, continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(heading) :]
    block = after[after.index("```sh\n") + len("```sh\n") :]
    block = block[: block.index("```")]
    commands, pending = [], ""
    for line in block.splitlines():
        pending += line.rstrip().removesuffix("\\").rstrip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if pending.strip():
                commands.append(" ".join(pending.split()))
            pending = ""
    return commands


@pytest.mark.devnet
def test_your_own_model_walkthrough_in_a_fresh_virtualenv_on_anvil(tmp_path: Path, fedledger_wheel: Path) -> None:
    commands = readme_commands("### Your own model")
    venv = fresh_virtualenv(tmp_path / "venv", fedledger_wheel).parent
    work = tmp_path / "work"
    work.mkdir()
    port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        FEDLEDGER_DEVNET_PORT=str(port),
        FEDLEDGER_RPC_URL=f"http://127.0.0.1:{port}",
        FEDLEDGER_ANVIL=str(anvil_binary()),
        PYTHONUNBUFFERED="1",
    )
    background: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    outputs: dict[str, str] = {}  # README command (without .venv/bin/) → its output
    try:
        for number, command in enumerate(commands):
            line = command.replace(".venv/bin/", f"{venv}/bin/").replace("127.0.0.1:8600", f"127.0.0.1:{api_port}")
            serving = " api serve" in line
            if serving:
                line = line.removesuffix("&").strip() + f" --port {api_port} &"
            if "audit verify" in line:  # the roles were started in the background: let them finish first
                for started, process, _ in background:
                    if " api serve" not in started:
                        assert process.wait(timeout=ROLE_TIMEOUT) == 0, _logs(background)
            argv = shlex.split(line.removesuffix("&"))
            if line.endswith("&"):
                log_path = tmp_path / f"background-{number}.log"
                with log_path.open("wb") as log:
                    process = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
                background.append((line, process, log_path))
                if serving:
                    wait_for_port("127.0.0.1", api_port, timeout=60)
                continue
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}\n{_logs(background)}"
            outputs[command.removeprefix(".venv/bin/")] = done.stdout + done.stderr  # progress lines are on stderr
    finally:
        for _, process, _ in background:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        subprocess.run([str(venv / "bin" / "fedledger"), "devnet", "stop"], cwd=work, env=env, timeout=60)

    assert "2 passed" in outputs["python -m pytest -q my-task"]
    assert "my_task.task:TASK (my-task)" in outputs["fedledger task list"]
    assert "task my-task version 0.1.0" in outputs["fedledger task show my-task"]
    assert outputs["fedledger audit verify latest --store http://127.0.0.1:8600"].startswith(
        "VERIFIED  version 2 re-derived from 2 updates with arc_nnm_trimmed_mean"
    )
    node_logs = [path.read_text() for line, _, path in background if " node run " in line]
    node_logs.append(outputs[next(c for c in outputs if c.startswith("fedledger node run"))])
    assert [text.count(": submitted ") for text in node_logs] == [2, 2]
    assert ROOT not in venv.parents and ROOT not in work.parents


def _logs(background: list[tuple[str, subprocess.Popen[bytes], Path]]) -> str:
    """Every background command with its output so far, for a failure message."""
    return "\n".join(f"--- {line}\n{path.read_text(errors='replace')}" for line, _, path in background)

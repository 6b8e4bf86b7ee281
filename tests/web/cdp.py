"""A small Chrome DevTools protocol client for Debian's headless Chromium, over --remote-debugging-pipe.

No websocket library and no browser download: Chromium reads commands on fd 3 and
writes answers and events on fd 4, each message JSON ending in a NUL byte.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

CHROMIUM = os.environ.get("SCHEMAHUB_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags, Chromium keeps calling Google's hosts, refused on a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--disable-extensions",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]


class CDPError(Exception):
    pass


def chromium_path() -> str:
    """The Chromium binary, or an error that says how to install it (.ci/run does it)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    raise CDPError(f"no Chromium at {CHROMIUM}: install Debian's package (sudo apt-get install -y chromium; "
                   ".ci/run does it) or set SCHEMAHUB_CHROMIUM")


def _high(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Browser:
    """One headless Chromium and one page in it."""

    def __init__(self, width: int = 1360, height: int = 1000, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="schemahub-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        to_child_r, from_child_w = _high(to_child_r), _high(from_child_w)  # never 3 or 4 themselves
        # The child needs the pipe ends at fds 3 and 4 exactly: bash moves them there (dash takes one-digit fds
        # only), then becomes Chromium.
        move = f'exec "$@" 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-'
        cmd = ["/bin/bash", "-c", move, "bash", chromium_path(), *FLAGS, f"--user-data-dir={self.profile}",
               f"--window-size={width},{height}", "about:blank"]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (Chromium's own chatter, shown if it dies; closed in close())
        self.proc = subprocess.Popen(cmd, pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_child_r)
        os.close(from_child_w)
        self._next = 0
        self._answers: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.console: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._answers[msg["id"]] = msg
                        self._cond.notify_all()
                elif msg.get("method") == "Runtime.consoleAPICalled":
                    args = msg["params"].get("args", [])
                    self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
                elif msg.get("method") == "Runtime.exceptionThrown":
                    self.console.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def call(self, method: str, *, session: bool = False, **params) -> dict:
        with self._cond:
            self._next += 1
            mid = self._next
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._answers or self._closed, timeout=self.timeout):
                raise CDPError(f"{method}: no answer from Chromium in {self.timeout:g} s")
            if mid not in self._answers:
                raise CDPError(f"{method}: Chromium exited: {self.log()[-800:]}")
            answer = self._answers.pop(mid)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str):
        """The value of a JS expression (awaited if it is a promise)."""
        res = self.call("Runtime.evaluate", session=True, expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise CDPError(f"{expression[:80]}: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res["result"].get("value")

    def wait_for(self, condition: str, timeout_ms: int = 10_000):
        """Poll a JS expression in the page until it is truthy; its last value (falsy on timeout)."""
        js = (f"new Promise(done => {{ const t0 = Date.now(); (function poll() {{ let v; "
              f"try {{ v = ({condition}); }} catch (e) {{ v = null; }} "
              f"if (v || Date.now() - t0 > {timeout_ms}) done(v); else setTimeout(poll, 50); }})(); }})")
        return self.evaluate(js)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except CDPError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        self._reader.join(timeout=2)
        os.close(self._from_child)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

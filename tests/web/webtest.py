"""Helpers for the web demo tests: start glmvoice-web on a free loopback port, read /stats,
bounded waits, and a minimal Chrome DevTools protocol client (python3-websocket)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def need_websocket_client():
    try:
        import websocket  # noqa: F401  (Debian: python3-websocket)
    except ImportError:
        skip("python3-websocket is not installed (scripts/setup.sh installs it)")


def watchdog(seconds):
    """Fails the test (through AssertionError, so the server's log is printed) if it runs longer
    than `seconds`: a hang must show up as a failure with context, not as a meson timeout."""
    def expire(_signum, _frame):
        raise AssertionError(f"watchdog: the test ran longer than {seconds} s")
    signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)


def wait_for(what, predicate, timeout, interval=0.2):
    """Polls predicate() until it returns a true value (returned) or fails after timeout s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Server:
    """glmvoice-web on 127.0.0.1 and a free port; its log is kept for the failure report."""

    def __init__(self, build, extra_args=(), env=None):
        exe = os.path.join(build, "tools", "web", "glmvoice-web")
        if not os.path.exists(exe):
            skip(f"{exe} not built (needs libsoup-3.0-dev and libgstreamer-plugins-bad1.0-dev)")
        self.log = []
        run_env = dict(os.environ)
        run_env.pop("GLMVOICE_MODEL_DIR", None)
        run_env["GLMVOICE_BUILD"] = build
        run_env.update(env or {})
        self.proc = subprocess.Popen([exe, "--port", "0", "--bind", "127.0.0.1", *extra_args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=run_env)
        self.url = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for("the server's URL", lambda: self.url or self.proc.poll() is not None, 120)
        if not self.url:
            self.dump_log()
            raise AssertionError("glmvoice-web exited before listening")
        self.ws_url = self.url.replace("http://", "ws://").rstrip("/") + "/ws"

    def _read(self):
        for line in self.proc.stdout:
            self.log.append(line.rstrip("\n"))
            m = re.search(r"open (http://\S+) in a browser", line)
            if m:
                self.url = m.group(1)

    def stats(self):
        with urllib.request.urlopen(self.url.rstrip("/") + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def wait_models_ready(self, timeout=180):
        state = wait_for("the models to load", lambda: self.stats()["models"] in ("ready", "failed") and self.stats(), timeout)
        assert state["models"] == "ready", f"models: {state}"

    def rss_kib(self):
        """Resident memory of the server (informational: printed, not asserted)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return -1

    def alive(self):
        return self.proc.poll() is None

    def dump_log(self, last=80):
        print("---- glmvoice-web log (last lines) ----")
        for line in self.log[-last:]:
            print(line)
        print("----")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                # A hang at shutdown: print where every thread is before killing it.
                if shutil.which("gdb"):
                    subprocess.run(["gdb", "-batch", "-p", str(self.proc.pid), "-ex", "thread apply all bt 25"],
                                   stdout=sys.stdout, stderr=subprocess.STDOUT, timeout=60, check=False)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Cdp:
    """One DevTools protocol connection (a page or the browser)."""

    def __init__(self, ws_url, timeout=60):
        import websocket
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:  # events in between are not needed
            reply = json.loads(self.ws.recv())
            if reply.get("id") == my_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page exception in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass

"""Headless Debian chromium with a fake microphone that plays a WAV, driven over the DevTools
protocol (webtest.Cdp). Loopback only: the debugging port listens on 127.0.0.1."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from webtest import Cdp, skip, wait_for


def find_chromium():
    for path in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or ""):
        if path and os.access(path, os.X_OK):
            return path
    skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")


class Browser:
    def __init__(self, microphone_wav, workdir):
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
        args = [find_chromium(), "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--mute-audio", "--window-size=1400,900",
                f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone_wav}",
                "--autoplay-policy=no-user-gesture-required", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
        self.log_path = os.path.join(workdir, "chromium.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        wait_for("chromium's DevTools port", lambda: os.path.exists(port_file) and open(port_file).read().strip()
                 or self.proc.poll() is not None, 60)
        if self.proc.poll() is not None:
            raise AssertionError(f"chromium exited ({self.proc.returncode}); see {self.log_path}")
        self.port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/version", timeout=10) as r:
            self.browser = Cdp(json.loads(r.read())["webSocketDebuggerUrl"])

    def open_page(self, url):
        target = self.browser.call("Target.createTarget", url=url)["targetId"]
        page = Cdp(f"ws://127.0.0.1:{self.port}/devtools/page/{target}")
        page.target_id = target
        wait_for("the page to load", lambda: page.evaluate(
            "document.readyState === 'complete' && typeof window.glmvoiceTest === 'object'"), 30)
        return page

    def close_page(self, page):
        page.close()
        self.browser.call("Target.closeTarget", targetId=page.target_id)

    def kill(self):
        """The browser disappears: no WebSocket close frame, no goodbye."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self):
        self.kill()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

#!/usr/bin/env python3
"""The web demo in a real browser: headless chromium, fake microphone playing an espeak-ng
question, glmvoice-web with the tiny models.

    test_web_browser.py BUILD_DIR [SCREENSHOT.png]   (exit 77 = skipped, with the reason)

Checks: the page connects; a spoken question is answered over WebRTC (inbound-rtp packets and
bytes, a non-silent answer recorded from the received track); the transcript and the debug
view fill in; a typed question gets an answer; a screenshot is taken; two sessions at once get
separate answers; the browser killed mid-answer leaves no pipeline behind.
"""
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from webtest import Server, need_websocket_client, watchdog, skip, wait_for  # noqa: E402

MIN_ANSWER_RMS = 1e-3   # the tiny decoder's noise is far above this; digital silence is 0


def make_question(path):
    """espeak-ng question with silence around it: the fake microphone loops the file, and the
    tokenizer's endpointing ends a turn after 600 ms of silence."""
    if not shutil.which("espeak-ng"):
        skip("espeak-ng is not installed")
    raw = path + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", raw, "What is the weather like in Beijing today?"], check=True)
    with wave.open(raw, "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    silence = b"\0" * (params.sampwidth * params.nchannels * int(params.framerate * 1.5))
    with wave.open(path, "wb") as w:
        w.setparams(params)
        w.writeframes(silence[: len(silence) // 3] + frames + silence)


def snapshot(page):
    return page.evaluate("JSON.stringify(glmvoiceTest.snapshot())") and json.loads(
        page.evaluate("JSON.stringify(glmvoiceTest.snapshot())"))


def answered(page, mode, min_rms=None):
    """The first turn of `mode` whose answer is complete (text, debug, and audio if asked)."""
    s = snapshot(page)
    for t in s["turns"]:
        if t["user"]["mode"] != mode or not t["debug"] or not t["answer"]["textDone"]:
            continue
        if min_rms is not None and not (t["answer"]["audio"] and t["answer"]["audio"]["rms"] > min_rms):
            continue
        return t
    return None


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print(f"ok: {message}")


def main():
    build = sys.argv[1]
    watchdog(270)
    screenshot = sys.argv[2] if len(sys.argv) > 2 else os.path.join(build, "test-scratch", "web", "web-demo.png")
    need_websocket_client()
    from browser import Browser, find_chromium
    find_chromium()
    work = os.path.join(build, "test-scratch", f"web-browser-{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    os.makedirs(os.path.dirname(screenshot), exist_ok=True)
    wav = os.path.join(work, "question.wav")
    make_question(wav)

    server = Server(build, ["--max-new-tokens", "60"])
    browser = None
    try:
        server.wait_models_ready()
        browser = Browser(wav, work)
        a = browser.open_page(server.url)
        wait_for("page A to connect", lambda: snapshot(a)["connected"] and snapshot(a)["session"], 20)
        a.evaluate("glmvoiceTest.start()")

        spoken = wait_for("a spoken question answered over WebRTC", lambda: answered(a, "speech", MIN_ANSWER_RMS), 90)
        s = snapshot(a)
        check(s["rtc"]["packetsReceived"] > 0 and s["rtc"]["bytesReceived"] > 0,
              f"browser received answer audio over WebRTC: {s['rtc']['packetsReceived']} packets, {s['rtc']['bytesReceived']} bytes")
        remote = s["rtc"].get("remoteAddress") or ""
        check(remote.startswith("127.") or remote == "::1",
              f"the media flows over loopback (server candidate {remote!r}), as the server is bound there")
        check(spoken["answer"]["audio"]["rms"] > MIN_ANSWER_RMS,
              f"recorded answer is not silent: rms {spoken['answer']['audio']['rms']:.4f}, {spoken['answer']['audio']['seconds']:.2f} s")
        check(spoken["user"]["seconds"] > 0.5, f"question waveform shown: {spoken['user']['seconds']:.2f} s of speech")
        check(len(spoken["debug"]["inputIds"]) > 0 and len(spoken["debug"]["completionIds"]) > 0,
              f"debug view: {len(spoken['debug']['inputIds'])} input ids, {len(spoken['debug']['completionIds'])} output ids")
        dom = a.evaluate("document.querySelectorAll('#transcript .msg').length + '/' + document.querySelectorAll('#debug .turn').length")
        check(all(int(n) > 0 for n in dom.split("/")), f"transcript/debug entries on the page: {dom}")

        # Typed question: the microphone is gated off; wait for spoken turns in flight first.
        a.evaluate("glmvoiceTest.setMode('type')")
        wait_for("spoken turns in flight to finish", lambda: all(t["debug"] for t in snapshot(a)["turns"]), 60)
        a.evaluate("glmvoiceTest.sendText('What is two plus two?')")
        typed = wait_for("a typed question answered", lambda: answered(a, "text"), 60)
        check(len(typed["debug"]["completionIds"]) > 0, f"typed question answered: {typed['answer']['text']!r}")

        wait_for("the typed answer's recording", lambda: snapshot(a)["turns"][-1]["answer"]["audio"], 20)
        png = a.call("Page.captureScreenshot", format="png")["data"]
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(png))
        check(os.path.getsize(screenshot) > 10000, f"screenshot written: {screenshot}")

        # Two sessions at once: each gets its own answer.
        b = browser.open_page(server.url)
        wait_for("page B to connect", lambda: snapshot(b)["connected"] and snapshot(b)["session"], 20)
        b.evaluate("glmvoiceTest.start()")
        wait_for("page B's spoken question answered", lambda: answered(b, "speech", MIN_ANSWER_RMS), 90)
        b.evaluate("glmvoiceTest.setMode('type')")
        wait_for("B's spoken turns in flight to finish", lambda: all(t["debug"] for t in snapshot(b)["turns"]), 60)
        before_a, before_b = len(snapshot(a)["turns"]), len(snapshot(b)["turns"])
        a.evaluate("glmvoiceTest.sendText('Tell me a joke about cats.')")
        b.evaluate("glmvoiceTest.sendText('Where is the Great Wall?')")

        def last_answered(page, before):
            turns = snapshot(page)["turns"][before:]
            return turns and turns[-1]["debug"] and turns[-1]["answer"]["textDone"] and turns[-1]
        ta = wait_for("A's second typed answer", lambda: last_answered(a, before_a), 60)
        tb = wait_for("B's typed answer", lambda: last_answered(b, before_b), 60)
        sa, sb = snapshot(a), snapshot(b)
        check(sa["session"] != sb["session"], f"two sessions: {sa['session']} and {sb['session']}")
        check(ta["debug"]["inputIds"] != tb["debug"]["inputIds"],
              "separate answers: each session's turn has its own input ids")
        check(ta["user"]["text"].startswith("Tell me") and tb["user"]["text"].startswith("Where"),
              "each page shows its own question")
        check(sb["rtc"]["packetsReceived"] > 0, f"page B received audio too: {sb['rtc']['packetsReceived']} packets")
        check(server.stats()["sessions_open"] == 2, "the server holds two sessions")

        # The browser disappears mid-answer (the fake microphone keeps asking in B).
        b.evaluate("glmvoiceTest.setMode('speak')")
        wait_for("B answering again", lambda: snapshot(b)["turns"][-1]["answer"]["text"] != "" or len(snapshot(b)["turns"]) > before_b + 1, 60)
        browser.kill()
        state = wait_for("every session closed and pipeline freed",
                         lambda: (lambda st: st["sessions_open"] == 0 and st["pipelines_alive"] == 0 and st)(server.stats()), 30)
        check(server.alive(), f"server still running after the browser vanished: {state}")
        ended = wait_for("the log lines saying why the sessions ended",
                         lambda: [line for line in server.log if ": ended: " in line][-2:]
                         if len([line for line in server.log if ": ended: " in line]) >= 2 else None, 10)
        check(all(line.split(": ended: ")[1].strip() for line in ended), f"the server logged why the sessions ended: {ended}")
        print("PASS")
        return 0
    except AssertionError as e:
        print(f"FAIL: {e}")
        server.dump_log()
        return 1
    finally:
        if browser:
            browser.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

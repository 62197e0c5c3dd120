#!/usr/bin/python3
"""A spoken conversation from Python through GObject introspection.

Runs question WAV -> glmvoicetokenize ! glmvoicellm ! glmvoicedecode -> answer WAV and prints
what the elements post on the bus: model load progress, for every answered turn its
transcript and a one-line summary (from the glmvoicellm-turn message), history drops,
warnings and errors. Needs Debian's python3-gi (run it with /usr/bin/python3, not a venv).

    GST_PLUGIN_PATH=build/plugins pipelines/converse.py \
        --tokenizer DIR --llm DIR --decoder DIR [--timeout S] QUESTION.wav ANSWER.wav

Exit status: 0 after EOS, 1 on an error message, 2 on timeout.
"""
import argparse
import struct
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def printable(text: str) -> str:
    """One terminal line: control characters (random models emit them) escaped."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def turn_lines(s: Gst.Structure) -> list:
    """Transcript line and one-line summary of a glmvoicellm-turn message."""
    def field(name, default=0):
        ok, value = (s.get_int(name) if name not in ("prefill-ms", "decode-ms-per-token")
                     else s.get_double(name))
        return value if ok else default
    turn = field("turn")
    text = s.get_string("text") or ""
    summary = (f"turn {turn}: reason={s.get_string('reason')}, prompt {field('prompt-tokens')} tokens, "
               f"{field('generated-tokens')} generated ({field('speech-tokens')} speech), "
               f"prefill {field('prefill-ms'):.1f} ms, {field('decode-ms-per-token'):.1f} ms/token")
    return [f"answer {turn}: {printable(text)}", summary]


def fix_empty_wav(path: str) -> None:
    """wavenc leaves its ~2 GB length placeholders when no audio came (an answer without
    speech): write the sizes of an empty WAV instead."""
    try:
        with open(path, "r+b") as f:
            if f.seek(0, 2) != 44:
                return
            f.seek(4)
            f.write(struct.pack("<I", 36))
            f.seek(40)
            f.write(struct.pack("<I", 0))
        print(f"note: the answer has no speech: {path} is an empty WAV")
    except OSError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--llm", required=True)
    parser.add_argument("--decoder", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("question")
    parser.add_argument("answer")
    args = parser.parse_args()

    Gst.init(None)
    try:
        pipeline = Gst.parse_launch(
            f'filesrc location="{args.question}" ! decodebin ! audioconvert ! audioresample '
            f'! glmvoicetokenize model-path="{args.tokenizer}" '
            f'! glmvoicellm name=llm model-path="{args.llm}" max-new-tokens={args.max_new_tokens} '
            f'! glmvoicedecode model-path="{args.decoder}" '
            f'! audioconvert ! wavenc ! filesink location="{args.answer}" '
            f"llm.text_src ! fakesink")
    except GLib.Error as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    status = {"code": 0, "turns": 0}

    def on_message(_bus, message):
        kind = message.type
        name = message.src.get_name() if message.src else "?"
        if kind == Gst.MessageType.PROGRESS:
            ptype, code, text = message.parse_progress()
            print(f"progress {name}: {code} {ptype.value_nick}: {text}")
        elif kind == Gst.MessageType.ELEMENT:
            s = message.get_structure()
            if s is None:
                return
            if s.get_name() == "glmvoicellm-turn":
                status["turns"] += 1
                for line in turn_lines(s):
                    print(line)
            elif s.get_name() == "glmvoicellm-context":
                ok, dropped = s.get_int("dropped-turns")
                print(f"history: dropped the {dropped} oldest turn(s) to fit the context")
        elif kind == Gst.MessageType.WARNING:
            warning, debug = message.parse_warning()
            print(f"warning from {name}: {warning.message}", file=sys.stderr)
        elif kind == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            print(f"error from {name}: {error.message} ({debug})", file=sys.stderr)
            status["code"] = 1
            loop.quit()
        elif kind == Gst.MessageType.EOS:
            loop.quit()

    def on_timeout():
        print(f"error: no end of stream after {args.timeout:g} s: giving up", file=sys.stderr)
        status["code"] = 2
        loop.quit()
        return False

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    GLib.timeout_add(int(args.timeout * 1000), on_timeout)
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        status["code"] = 1  # the error message (e.g. a bad model path) follows on the bus
    try:
        loop.run()
    except KeyboardInterrupt:
        status["code"] = 130
    finally:
        pipeline.set_state(Gst.State.NULL)
        bus.remove_signal_watch()
    fix_empty_wav(args.answer)
    print(f"turns answered: {status['turns']}")
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A spoken conversation from Python through GObject introspection.

Runs question WAV -> glmvoicetokenize ! glmvoicellm ! glmvoicedecode -> answer WAV and prints
what the elements post on the bus: model load progress, the per-turn debug message of
glmvoicellm (input token ids, completion token ids, decoded text) and errors.

    GST_PLUGIN_PATH=build/plugins python3 pipelines/converse.py \
        --tokenizer DIR --llm DIR --decoder DIR QUESTION.wav ANSWER.wav
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--llm", required=True)
    parser.add_argument("--decoder", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=2000)
    parser.add_argument("question")
    parser.add_argument("answer")
    args = parser.parse_args()

    Gst.init(None)
    pipeline = Gst.parse_launch(
        f'filesrc location="{args.question}" ! decodebin ! audioconvert ! audioresample '
        f'! glmvoicetokenize model-path="{args.tokenizer}" '
        f'! glmvoicellm name=llm model-path="{args.llm}" max-new-tokens={args.max_new_tokens} '
        f'! glmvoicedecode model-path="{args.decoder}" '
        f'! audioconvert ! wavenc ! filesink location="{args.answer}" '
        f"llm.text_src ! fakesink")
    loop = GLib.MainLoop()
    status = {"code": 0, "turns": 0}

    def on_message(_bus, message):
        kind = message.type
        if kind == Gst.MessageType.PROGRESS:
            ptype, code, text = message.parse_progress()
            print(f"progress {message.src.get_name()}: {code} {ptype.value_nick}: {text}")
        elif kind == Gst.MessageType.ELEMENT:
            structure = message.get_structure()
            if structure is not None and structure.get_name().startswith("glmvoice"):
                status["turns"] += 1
                print(f"{message.src.get_name()}: {structure.to_string()}")
        elif kind == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            print(f"error from {message.src.get_name()}: {error.message} ({debug})", file=sys.stderr)
            status["code"] = 1
            loop.quit()
        elif kind == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
    print(f"turns answered: {status['turns']}")
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())

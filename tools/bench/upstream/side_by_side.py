#!/usr/bin/env python3
"""Upstream GLM-4-Voice (Python) and glmvoice (C++) timed side by side, stage by stage.

One invocation, the same checkpoint files, the same thread count, the same torch build:
each round times upstream's own code in this process and then `glmvoice-bench` in a
subprocess (the order alternates between rounds so that both sides see the same load),
and the script prints medians and the ratio ours / upstream (issue 10 §3).

Upstream's code is not part of this repository: pass a folder holding checkouts of
THUDM/GLM-4-Voice, shivammehta25/Matcha-TTS (the commit GLM-4-Voice pins as its submodule)
and, for the LLM, the checkpoint's modeling_chatglm.py + configuration_chatglm.py
(see README.md here for the layout and the Python packages it needs).

Workloads (those of glmvoice-bench):
  tokenizer  20 s of audio, real width, --tokenizer-layers layers (random weights)
  flow/hift  200 tokens offline (one token2wav(finalize=True)), release size, random weights
  llm        mid size: prefill 256 tokens, then 32 greedy decode steps (ms/token)
"""
import argparse
import glob
import importlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import torch


# ---------------------------------------------------------------------------------- helpers

def log(msg):
    print(msg, flush=True)


class LoadGuard:
    """Runs --pause-cmd before a timed run and --resume-cmd right after (always)."""

    def __init__(self, pause_cmd, resume_cmd):
        self.pause_cmd, self.resume_cmd = pause_cmd, resume_cmd

    def __enter__(self):
        if self.pause_cmd:
            subprocess.run(self.pause_cmd, shell=True, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.resume_cmd:
            subprocess.run(self.resume_cmd, shell=True, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return False


def run_ours(bench, args, guard):
    cmd = [bench] + args
    with guard:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(cmd), p.returncode, p.stdout))
    return p.stdout


def parse(pattern, text, what):
    m = re.search(pattern, text)
    if not m:
        raise RuntimeError("cannot find %s in glmvoice-bench output:\n%s" % (what, text))
    return m


def synthetic_speech(n):
    """The same gliding-tone signal glmvoice-bench tokenizer feeds (its noise LCG included)."""
    t = np.arange(n) / 16000.0
    f1 = 180 + 60 * np.sin(2 * np.pi * 0.8 * t)
    f2 = 900 + 500 * np.sin(2 * np.pi * 0.33 * t)
    ph1 = np.cumsum(2 * np.pi * f1 / 16000.0)
    ph2 = np.cumsum(2 * np.pi * f2 / 16000.0)
    s = 12345
    noise = np.empty(n)
    mask = (1 << 64) - 1
    for i in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) & mask
        noise[i] = (s >> 11) / 9007199254740992.0 - 0.5
    env = np.maximum(0.0, np.sin(2 * np.pi * 2.5 * t))
    return (0.3 * env * (np.sin(ph1) + 0.4 * np.sin(ph2)) + 0.002 * noise).astype(np.float32)


class Results:
    def __init__(self):
        self.rows = []  # (stage, workload, unit, upstream list, ours list, note)

    def add(self, stage, workload, unit, up, ours, note=""):
        self.rows.append((stage, workload, unit, up, ours, note))

    def table(self):
        out = ["| stage | workload | upstream | ours | ours / upstream | runs (upstream; ours) |",
               "|---|---|---|---|---|---|"]
        for stage, workload, unit, up, ours, note in self.rows:
            mu = statistics.median(up) if up else float("nan")
            mo = statistics.median(ours) if ours else float("nan")
            ratio = mo / mu if up and ours else float("nan")
            runs = "%s; %s" % (", ".join("%.3g" % v for v in up) or "-",
                               ", ".join("%.3g" % v for v in ours) or "-")
            out.append("| %s | %s | %s | %s | %s | %s |" % (
                stage, workload + (" " + note if note else ""),
                ("%.3f %s" % (mu, unit)) if up else "-", ("%.3f %s" % (mo, unit)) if ours else "-",
                ("%.2f" % ratio) if not math.isnan(ratio) else "-", runs))
        return "\n".join(out)


def interleave(rounds, up_fn, ours_fn):
    """Round r: upstream then ours when r is even, ours then upstream when odd."""
    up, ours = [], []
    for r in range(rounds):
        order = (up_fn, ours_fn) if r % 2 == 0 else (ours_fn, up_fn)
        for fn in order:
            v = fn()
            (up if fn is up_fn else ours).append(v)
        log("  round %d: upstream %s, ours %s" % (r + 1, up[-1], ours[-1]))
    return up, ours


# ------------------------------------------------------------------------------- tokenizer

def derive_tokenizer_dir(base, layers, mkmodel):
    """real-l<layers>: the real-width real-l16 weights with quantize/pooling at `layers`.

    Both loaders read only layers below quantize_position, so the first `layers` layers of the
    same file are what both sides run."""
    d = os.path.join(base, "real-l%d" % layers)
    if os.path.exists(os.path.join(d, "config.json")):
        return d
    src = os.path.join(base, "real-l16")
    if not os.path.exists(os.path.join(src, "config.json")):
        subprocess.run([mkmodel, "--kind", "tokenizer", "--config", "real-l16", "--out", src], check=True)
    os.makedirs(d, exist_ok=True)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["quantize_position"] = layers
    cfg["pooling_position"] = layers
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    for name in ("model.safetensors", "preprocessor_config.json"):
        os.symlink(os.path.join(src, name), os.path.join(d, name))
    return d


def bench_tokenizer(a, guard, results):
    import safetensors
    from speech_tokenizer.configuration_whisper import WhisperVQConfig
    from speech_tokenizer.modeling_whisper import WhisperVQEncoder
    from transformers import WhisperFeatureExtractor

    for layers in a.tokenizer_layers:
        d = derive_tokenizer_dir(a.tokenizer_dir, layers, a.mkmodel)
        # As speech_tokenizer/utils.py load_quantize_encoder, on the CPU and for a file whose
        # names carry no "model.encoder." prefix (the layout glmvoice-mkmodel writes).
        config = WhisperVQConfig.from_pretrained(d)
        config.quantize_encoder_only = True
        model = WhisperVQEncoder(config)
        state = {}
        with safetensors.safe_open(os.path.join(d, "model.safetensors"), framework="pt", device="cpu") as f:
            for key in f.keys():
                if key.startswith("layers.") and int(key.split(".")[1]) >= config.quantize_position:
                    continue
                state[key] = f.get_tensor(key)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("embed_positions2")]
        if missing:
            raise RuntimeError("upstream tokenizer: missing weights %s" % missing[:8])
        model.eval()
        fe = WhisperFeatureExtractor.from_pretrained(d)
        audio = synthetic_speech(int(a.seconds * 16000))
        stride = model.conv1.stride[0] * model.conv2.stride[0] * (config.pooling_kernel_size or 1) * fe.hop_length
        log("tokenizer real-l%d: attention %s, %d layers, ignored tensors %s" % (
            layers, config._attn_implementation, len(model.layers), sorted(set(k.split(".")[0] for k in unexpected))))

        def upstream_once():
            # extract_speech_token's body for one <= 30 s utterance, device cpu instead of cuda.
            with torch.no_grad():
                t0 = time.perf_counter()
                features = fe([audio], sampling_rate=16000, return_attention_mask=True, return_tensors="pt",
                              device="cpu", padding="longest", pad_to_multiple_of=stride)
                ids = model(**features).quantized_token_ids
                return time.perf_counter() - t0, ids.shape[1]

        _, n_tok = upstream_once()  # warm-up: the full workload, untimed

        def up():
            with guard:
                t, n = upstream_once()
            assert n == n_tok
            return t

        def ours():
            out = run_ours(a.bench, ["tokenizer", "--layers", str(layers), "--seconds", str(a.seconds),
                                     "--threads", str(a.threads), "--dir", a.tokenizer_dir], guard)
            m = parse(r"\[real-l%d\] offline:\s+(\d+) tokens in ([\d.]+) s" % layers, out, "tokenizer offline")
            if int(m.group(1)) != n_tok:
                log("  note: token counts differ (upstream %d, ours %s)" % (n_tok, m.group(1)))
            return float(m.group(2))

        log("tokenizer real-l%d, %.0f s audio (%d tokens):" % (layers, a.seconds, n_tok))
        u, o = interleave(a.rounds, up, ours)
        results.add("tokenizer", "%.0f s, real width, %d layers" % (a.seconds, layers), "s", u, o)
        del model


# ---------------------------------------------------------------------------------- decoder

def bench_decoder(a, guard, results):
    from flow_inference import AudioDecoder

    d = a.decoder_dir
    if not os.path.exists(os.path.join(d, "hift.pt")):
        subprocess.run([a.mkmodel, "--kind", "decoder", "--config", "real-random", "--out", d], check=True)
    dec = AudioDecoder(os.path.join(d, "config.yaml"), os.path.join(d, "flow.pt"), os.path.join(d, "hift.pt"),
                       device="cpu")
    g = torch.Generator().manual_seed(1)
    vocab = dec.flow.vocab_size
    token = torch.randint(0, vocab, (1, a.tokens), generator=g, dtype=torch.int32)
    log("decoder: flow %.1f M, HiFT %.1f M parameters" % (
        sum(p.numel() for p in dec.flow.parameters()) / 1e6, sum(p.numel() for p in dec.hift.parameters()) / 1e6))

    def upstream_once():
        # token2wav(finalize=True) with its default (empty) prompt, flow and HiFT timed apart.
        t0 = time.perf_counter()
        mel = dec.flow.inference(token=token, token_len=torch.tensor([token.shape[1]], dtype=torch.int32),
                                 prompt_token=torch.zeros(1, 0, dtype=torch.int32),
                                 prompt_token_len=torch.tensor([0], dtype=torch.int32),
                                 prompt_feat=torch.zeros(1, 0, 80),
                                 prompt_feat_len=torch.tensor([0], dtype=torch.int32),
                                 embedding=torch.zeros(1, 192))
        t1 = time.perf_counter()
        speech, _ = dec.hift.inference(mel=mel, cache_source=torch.zeros(1, 1, 0))
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, speech.shape[-1]

    upstream_once()  # warm-up: the full workload, untimed
    up_flow, up_hift, our_flow, our_hift = [], [], [], []

    def up():
        with guard:
            f, h, _ = upstream_once()
        up_flow.append(f)
        up_hift.append(h)
        return round(f + h, 2)

    def ours_dtype(dtype, flows, hifts):
        out = run_ours(a.bench, ["decoder", "--tokens", str(a.tokens), "--skip-stream", "--threads", str(a.threads),
                                 "--dtype", dtype, "--dir", d], guard)
        m = parse(r"offline:.*\(flow ([\d.]+) s, HiFT ([\d.]+) s\)", out, "decoder offline")
        flows.append(float(m.group(1)))
        hifts.append(float(m.group(2)))
        return round(flows[-1] + hifts[-1], 2)

    log("decoder offline, %d tokens, release size:" % a.tokens)
    interleave(a.rounds, up, lambda: ours_dtype("float32", our_flow, our_hift))
    w = "%d tokens offline, release size" % a.tokens
    results.add("flow", w, "s", up_flow, our_flow)
    results.add("HiFT", w, "s", up_hift, our_hift)
    if a.bf16_rounds > 0:
        bf_flow, bf_hift = [], []
        log("decoder offline in bfloat16 (ours), %d rounds:" % a.bf16_rounds)
        for _ in range(a.bf16_rounds):
            ours_dtype("bfloat16", bf_flow, bf_hift)
            log("  ours bf16: flow %.2f s, HiFT %.2f s" % (bf_flow[-1], bf_hift[-1]))
        results.add("flow", w, "s", up_flow, bf_flow, "(ours bf16)")
        results.add("HiFT", w, "s", up_hift, bf_hift, "(ours: bf16 model, HiFT fp32)")
    del dec


# -------------------------------------------------------------------------------------- LLM

def import_chatglm(folder):
    """modeling_chatglm.py uses a relative import: load the folder as a package."""
    pkg = types.ModuleType("glm4voice_llm")
    pkg.__path__ = [folder]
    sys.modules["glm4voice_llm"] = pkg
    cfg = importlib.import_module("glm4voice_llm.configuration_chatglm")
    mod = importlib.import_module("glm4voice_llm.modeling_chatglm")
    return cfg.ChatGLMConfig, mod.ChatGLMForConditionalGeneration


class StepClock:
    """A generate() streamer that records when each new token comes out."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def bench_llm(a, guard, results):
    import safetensors
    ChatGLMConfig, ChatGLMForConditionalGeneration = import_chatglm(a.chatglm_dir)
    d = os.path.join(a.llm_dir, "mid")
    if not os.path.exists(os.path.join(d, "config.json")):
        subprocess.run([a.mkmodel, "--kind", "llm", "--config", "mid", "--out", d], check=True)
    config = ChatGLMConfig(**json.load(open(os.path.join(d, "config.json"))))
    config.torch_dtype = torch.float32
    model = ChatGLMForConditionalGeneration(config, empty_init=False)
    state = {}
    for path in sorted(glob.glob(os.path.join(d, "model*.safetensors"))):
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key).float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("inv_freq")]
    if missing or unexpected:
        raise RuntimeError("upstream LLM: missing %s unexpected %s" % (missing[:8], unexpected[:8]))
    model = model.float().eval()
    # Prompt ids as glmvoice-bench llm makes them: (i * 7919) % (ranks in tokenizer.model).
    vocab_tokens = sum(1 for line in open(os.path.join(d, "tokenizer.model")) if line.strip())
    ids = torch.tensor([[(i * 7919) % vocab_tokens for i in range(a.prompt)]], dtype=torch.long)
    log("llm mid: attention %s, %.1f M parameters" % (
        config._attn_implementation, sum(p.numel() for p in model.parameters()) / 1e6))

    def upstream_once():
        # model_server.py's path: generate() with a streamer; greedy and exactly --decode new
        # tokens here (min_new_tokens masks the end tokens), as glmvoice-bench llm does.
        clock = StepClock()
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=a.decode + 1, min_new_tokens=a.decode + 1, streamer=clock)
        # times[0]: the prompt; times[1]: the first new token (prefill); then one per step.
        prefill = (clock.times[1] - t0) * 1000.0
        decode = (clock.times[-1] - clock.times[1]) * 1000.0 / (len(clock.times) - 2)
        return prefill, decode

    upstream_once()  # warm-up
    up_pre, up_dec, our_pre, our_dec = [], [], [], []

    def up():
        with guard:  # best of 2, like glmvoice-bench llm --repeat 2
            r = [upstream_once(), upstream_once()]
        up_pre.append(min(x[0] for x in r) / a.prompt)
        up_dec.append(min(x[1] for x in r))
        return "%.3f / %.2f ms" % (up_pre[-1], up_dec[-1])

    def ours():
        out = run_ours(a.bench, ["llm", "--configs", "mid", "--prompt", str(a.prompt), "--decode", str(a.decode),
                                 "--repeat", "2", "--threads", str(a.threads), "--dir", a.llm_dir], guard)
        m = parse(r"prompt\s+%d: prefill\s+[\d.]+ ms =\s+([\d.]+) ms/token \| decode \d+ tokens:\s+([\d.]+) ms/token"
                  % a.prompt, out, "llm figures")
        our_pre.append(float(m.group(1)))
        our_dec.append(float(m.group(2)))
        return "%.3f / %.2f ms" % (our_pre[-1], our_dec[-1])

    log("llm mid, prompt %d, decode %d (prefill ms/token / decode ms/token):" % (a.prompt, a.decode))
    interleave(a.rounds, up, ours)
    results.add("LLM prefill", "mid, %d tokens (per token)" % a.prompt, "ms", up_pre, our_pre)
    results.add("LLM decode", "mid, %d greedy steps (per token)" % a.decode, "ms", up_dec, our_dec)
    del model


# ------------------------------------------------------------------------------------- main

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", "..", ".."))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream-src", required=True,
                   help="folder with GLM-4-Voice/, Matcha-TTS/ and glm-4-voice-9b/ (modeling_chatglm.py)")
    p.add_argument("--bench", default=os.path.join(repo, "build", "tools", "glmvoice-bench"))
    p.add_argument("--mkmodel", default=os.path.join(repo, "build", "tools", "glmvoice-mkmodel"))
    p.add_argument("--stages", default="tokenizer,decoder,llm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per stage and side (median)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--tokenizer-layers", default="4")
    p.add_argument("--tokenizer-dir", default="/tmp/glmvoice-bench-tokenizer")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--decoder-dir", default="/tmp/glmvoice-bench-decoder/real-random")
    p.add_argument("--bf16-rounds", type=int, default=0, help="also time our decoder in bfloat16 N times")
    p.add_argument("--llm-dir", default="/tmp/glmvoice-bench-llm")
    p.add_argument("--prompt", type=int, default=256)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--pause-cmd", default="", help="shell command run before each timed run")
    p.add_argument("--resume-cmd", default="", help="shell command run right after each timed run")
    a = p.parse_args()
    a.tokenizer_layers = [int(x) for x in a.tokenizer_layers.split(",") if x]
    src = os.path.abspath(a.upstream_src)
    a.chatglm_dir = os.path.join(src, "glm-4-voice-9b")
    for sub in ("GLM-4-Voice", "Matcha-TTS"):
        sys.path.insert(0, os.path.join(src, sub))

    torch.set_num_threads(a.threads)
    # OMP_WAIT_POLICY (read by libgomp at start, inherited by glmvoice-bench): on a machine
    # with more runnable threads than cores, PASSIVE avoids barrier stalls of a whole time slice.
    log("torch %s (%s), %d threads, OMP_WAIT_POLICY=%s; glmvoice-bench %s" % (
        torch.__version__, torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
        os.environ.get("OMP_WAIT_POLICY", "(default)"), a.bench))
    guard = LoadGuard(a.pause_cmd, a.resume_cmd)
    results = Results()
    stages = {"tokenizer": bench_tokenizer, "decoder": bench_decoder, "llm": bench_llm}
    for name in a.stages.split(","):
        try:
            stages[name](a, guard, results)
        except Exception as e:  # one stage failing must not lose the others' figures
            log("stage %s failed: %s: %s" % (name, type(e).__name__, e))
    log("\nmedians of %d interleaved rounds, %d threads:" % (a.rounds, a.threads))
    log(results.table())


if __name__ == "__main__":
    main()

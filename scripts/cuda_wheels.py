#!/usr/bin/env python3
"""The NVIDIA runtime wheels a venv's torch wheel needs so that libtorch_cuda.so loads.

Usage: cuda_wheels.py TORCH_DIR [--bare]
  TORCH_DIR  site-packages/torch of the venv (its torch-*.dist-info/METADATA is read)
  --bare     list what a machine without any CUDA library would need (readelf NEEDED) instead
             of what is missing here (ldd "not found"); a dry run for a fresh GPU box
Prints one pip requirement per line, pinned as the torch wheel's own Requires-Dist pins them
(e.g. `cuda-toolkit[cublas,cudart]==13.0.2`, `nvidia-cudnn-cu13==9.19.0.56`). Only libraries
the C++ side loads are listed: Python-only requirements (cuda-bindings, triton, sympy, ...) are not.
"""
import glob
import os
import re
import subprocess
import sys

# soname prefix -> (short name in a cuda-toolkit[...] extra / an nvidia-<name>-cuXX wheel)
SONAMES = {
    "libcudart.so": "cudart", "libcublas.so": "cublas", "libcublasLt.so": "cublas",
    "libcufft.so": "cufft", "libcufile.so": "cufile", "libcurand.so": "curand",
    "libcusparse.so": "cusparse", "libcusolver.so": "cusolver", "libnvJitLink.so": "nvjitlink",
    "libcupti.so": "cupti", "libnvrtc.so": "nvrtc", "libnvToolsExt.so": "nvtx",
    "libcudnn.so": "cudnn", "libcusparseLt.so": "cusparselt", "libnccl.so": "nccl",
    "libnvshmem_host.so": "nvshmem",
}
# Loaded later by the libraries above (dlopen or their own NEEDED entries), so a bare machine
# needs them too: cuSPARSE links nvJitLink; cuDNN's engines load cuBLASLt and NVRTC.
IMPLIED = {"cusparse": {"nvjitlink"}, "cudnn": {"cublas", "nvrtc"}}
# libtorch_cpu.so is there too: the CUDA wheels build its profiler against CUPTI.
CUDA_LIBS = ["libtorch_cuda.so", "libc10_cuda.so", "libtorch_nvshmem.so", "libtorch_cpu.so"]
# CUDA 12 wheels name some libraries differently: nvidia-<name>-cu12 -> short name
CU12_NAMES = {"cudaruntime": "cudart", "cudanvrtc": "nvrtc", "cudacupti": "cupti"}


def requires(torch_dir):
    metas = glob.glob(os.path.join(os.path.dirname(torch_dir), "torch-*.dist-info", "METADATA"))
    if not metas:
        sys.exit(f"cuda_wheels: no torch-*.dist-info/METADATA beside {torch_dir}")
    out = []
    for line in open(metas[0], encoding="utf-8"):
        if not line.startswith("Requires-Dist:"):
            continue
        req, _, marker = line[len("Requires-Dist:"):].strip().partition(";")
        if marker and "Linux" not in marker or "extra ==" in marker:
            continue
        out.append(req.strip())
    return out


def needed_names(torch_dir, bare):
    names = set()
    for lib in CUDA_LIBS:
        path = os.path.join(torch_dir, "lib", lib)
        if not os.path.exists(path):
            continue
        if bare:
            text = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
            libs = re.findall(r"Shared library: \[([^\]]+)\]", text)
        else:
            text = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
            libs = [l.split()[0] for l in text.splitlines() if "not found" in l]
        for so in libs:
            for prefix, name in SONAMES.items():
                if so.startswith(prefix):
                    names.add(name)
    for name in list(names):
        names |= IMPLIED.get(name, set())
    return names


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    torch_dir = sys.argv[1]
    if not os.path.exists(os.path.join(torch_dir, "lib", "libtorch_cuda.so")):
        return  # a CPU-only wheel: nothing to add
    names = needed_names(torch_dir, "--bare" in sys.argv[2:])
    lines, toolkit_extras, toolkit_pin = [], [], None
    for req in requires(torch_dir):
        m = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]*)\])?\s*(.*)", req)
        pkg, extras, pin = m.group(1), m.group(3), m.group(4).strip()
        if pkg == "cuda-toolkit":  # CUDA 13 wheels: one meta-package with an extra per library
            toolkit_pin = pin
            toolkit_extras = [e.strip() for e in (extras or "").split(",") if e.strip() in names]
        elif pkg.startswith("nvidia-"):  # nvidia-cudnn-cu13, nvidia-cublas-cu12, ...
            short = re.sub(r"^nvidia-|-cu\d+$", "", pkg).replace("-", "")
            if CU12_NAMES.get(short, short) in names:
                lines.append(pkg + pin)
    if toolkit_extras:
        lines.insert(0, f"cuda-toolkit[{','.join(sorted(toolkit_extras))}]{toolkit_pin}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

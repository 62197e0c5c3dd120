#!/usr/bin/env python3
"""Writes a C++ source that embeds the page's files for glmvoice-web (see web_assets.h).

    embed_assets.py OUT.cpp FILE...   (each FILE is served as /<basename>)
"""
import os
import sys

MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def main() -> int:
    out, files = sys.argv[1], sys.argv[2:]
    lines = ['#include "web_assets.h"', "", "namespace glmvoice::web {", "namespace {", ""]
    table = []
    for index, path in enumerate(files):
        name = os.path.basename(path)
        mime = MIME.get(os.path.splitext(name)[1], "application/octet-stream")
        data = open(path, "rb").read()
        body = ",".join(str(b) for b in data)
        lines.append(f"const unsigned char kAsset{index}[] = {{{body},0}};")
        table.append(f'  {{"/{name}", "{mime}", kAsset{index}, {len(data)}}},')
    lines += ["", "const WebAsset kAssets[] = {"] + table + ["};", "", "}  // namespace", "",
              "const WebAsset* find_web_asset(const std::string& path) {",
              "  for (const auto& asset : kAssets)",
              "    if (path == asset.path) return &asset;",
              "  return nullptr;", "}", "", "}  // namespace glmvoice::web", ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

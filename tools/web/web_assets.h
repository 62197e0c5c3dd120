// The page's files, embedded at build time by embed_assets.py (one binary to copy, and the
// page always matches the server's protocol).
#pragma once

#include <cstddef>
#include <string>

namespace glmvoice::web {

struct WebAsset {
  const char* path;  // "/index.html"
  const char* mime;
  const unsigned char* data;
  size_t size;
};

// nullptr when `path` is not one of the embedded files.
const WebAsset* find_web_asset(const std::string& path);

}  // namespace glmvoice::web

// The one process-wide object: a locked cache of loaded models. Same kind + path + device
// + dtype -> one loaded instance shared by every element; released when the last user drops
// its shared_ptr. Two elements asking at once: the second waits for the first's load.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "runtime/options.h"

namespace glmvoice::gst {

// Returns the cached model for (kind, options) or calls `load` (outside the cache lock for
// other keys; it may throw, then nothing is cached and the exception propagates).
std::shared_ptr<const void> model_cache_get(
    const std::string& kind, const ModelOptions& options,
    const std::function<std::shared_ptr<const void>()>& load);

template <class Model>
std::shared_ptr<const Model> model_cache_get(
    const std::string& kind, const ModelOptions& options,
    const std::function<std::shared_ptr<const Model>()>& load) {
  return std::static_pointer_cast<const Model>(model_cache_get(
      kind, options, [&load]() -> std::shared_ptr<const void> { return load(); }));
}

// How many times `load` actually ran for (kind, options) in this process (for tests).
int model_cache_load_count(const std::string& kind, const ModelOptions& options);

}  // namespace glmvoice::gst

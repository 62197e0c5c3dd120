#include "glmvoice_model_cache.h"

#include <condition_variable>
#include <map>
#include <mutex>

namespace glmvoice::gst {

namespace {

// One slot per (kind, options). `loading` serializes loads of the same key; different keys
// load concurrently (the lock is dropped while `load` runs).
struct Slot {
  std::weak_ptr<const void> model;
  bool loading = false;
  int load_count = 0;
};

struct Cache {
  std::mutex mutex;
  std::condition_variable loaded;
  std::map<std::string, Slot> slots;
};

Cache& cache() {
  static Cache* instance = new Cache();  // never destroyed: elements may outlive statics
  return *instance;
}

std::string slot_key(const std::string& kind, const ModelOptions& options) {
  return kind + "|" + runtime::options_key(options);
}

}  // namespace

std::shared_ptr<const void> model_cache_get(
    const std::string& kind, const ModelOptions& options,
    const std::function<std::shared_ptr<const void>()>& load) {
  Cache& c = cache();
  const std::string key = slot_key(kind, options);
  std::unique_lock<std::mutex> lock(c.mutex);
  Slot* slot = &c.slots[key];
  c.loaded.wait(lock, [&] { return !c.slots[key].loading; });
  slot = &c.slots[key];
  if (auto model = slot->model.lock()) return model;
  slot->loading = true;
  lock.unlock();

  std::shared_ptr<const void> model;
  std::exception_ptr failure;
  try {
    model = load();
  } catch (...) {
    failure = std::current_exception();
  }

  lock.lock();
  slot = &c.slots[key];
  slot->loading = false;
  if (model) {
    slot->model = model;
    slot->load_count += 1;
  }
  c.loaded.notify_all();
  if (failure) std::rethrow_exception(failure);
  return model;
}

int model_cache_load_count(const std::string& kind, const ModelOptions& options) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  auto it = c.slots.find(slot_key(kind, options));
  return it == c.slots.end() ? 0 : it->second.load_count;
}

}  // namespace glmvoice::gst

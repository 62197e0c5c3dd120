// Everything that touches a WebSocket or a session's bookkeeping runs on the main loop's
// thread (libsoup is not thread-safe); GStreamer callbacks come from streaming threads and
// hand their work over with run_on_main().
#pragma once

#include <glib.h>

#include <functional>
#include <utility>

namespace glmvoice::web {

inline void run_on_main(std::function<void()> work) {
  auto* heap = new std::function<void()>(std::move(work));
  g_main_context_invoke_full(
      nullptr, G_PRIORITY_DEFAULT,
      [](gpointer data) -> gboolean {
        (*static_cast<std::function<void()>*>(data))();
        return G_SOURCE_REMOVE;
      },
      heap, [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
}

}  // namespace glmvoice::web

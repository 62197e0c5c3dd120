// Everything that touches a WebSocket or a session's bookkeeping runs on the main loop's
// thread (libsoup is not thread-safe); GStreamer callbacks come from streaming threads and
// hand their work over with run_on_main().
#pragma once

#include <glib.h>

#include <functional>
#include <utility>

namespace glmvoice::web {

// Always through an idle source of the default context, never run in place: invoking would
// run `work` on the calling thread whenever nobody holds the context (e.g. before the loop runs).
inline void run_on_main(std::function<void()> work) {
  auto* heap = new std::function<void()>(std::move(work));
  g_idle_add_full(
      G_PRIORITY_DEFAULT,
      [](gpointer data) -> gboolean {
        (*static_cast<std::function<void()>*>(data))();
        return G_SOURCE_REMOVE;
      },
      heap, [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
}

}  // namespace glmvoice::web

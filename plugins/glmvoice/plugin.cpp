/* glmvoice GStreamer plugin: GLM-4-Voice speech tokenizer, LLM and speech decoder.
 * This file only registers the elements; each element lives in its own file pair.
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>

#include "glmvoice_element_util.h"

// Element registrations (one line per element; each file has GST_ELEMENT_REGISTER_DEFINE).
// ELEMENT-DECLARATIONS (keep this marker)
GST_ELEMENT_REGISTER_DECLARE(glmvoicedecode);
GST_ELEMENT_REGISTER_DECLARE(glmvoicellm);
GST_ELEMENT_REGISTER_DECLARE(glmvoicetokenize);

static gboolean plugin_init(GstPlugin* plugin) {
  glmvoice::gst::install_log_bridge();
  gboolean ok = TRUE;
  // ELEMENT-REGISTRATIONS (keep this marker)
  ok &= GST_ELEMENT_REGISTER(glmvoicedecode, plugin);
  ok &= GST_ELEMENT_REGISTER(glmvoicellm, plugin);
  ok &= GST_ELEMENT_REGISTER(glmvoicetokenize, plugin);
  (void)plugin;
  return ok;
}

#define PACKAGE "glmvoice"
// This project (not the upstream model's repository): meson -Dpackage-origin=URL.
#ifndef GLMVOICE_PACKAGE_ORIGIN
#define GLMVOICE_PACKAGE_ORIGIN "Unknown package origin"
#endif
// License: LGPL-2.1-or-later, as meson.build and LICENSE ("LGPL" in GStreamer's list).
GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, glmvoice,
                  "GLM-4-Voice spoken dialogue: speech tokenizer, LLM and speech decoder",
                  plugin_init, GLMVOICE_VERSION, "LGPL", "glmvoice", GLMVOICE_PACKAGE_ORIGIN)

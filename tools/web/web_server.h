// The HTTP side: the page's files (embedded in the binary, see embed_assets.py), /stats
// (JSON counts for tests and monitoring) and the signalling WebSocket /ws, one Session per
// connection. Runs on the main loop's thread.
#pragma once

#include <libsoup/soup.h>

#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "model_holder.h"
#include "session.h"

namespace glmvoice::web {

struct ServerOptions {
  std::string bind = "127.0.0.1";
  int port = 8888;  // 0 = any free port
  SessionOptions session;
};

class WebServer {
 public:
  WebServer(ServerOptions options, ModelSet models);
  ~WebServer();
  WebServer(const WebServer&) = delete;
  WebServer& operator=(const WebServer&) = delete;

  // Starts loading the models and listening; returns the URL or throws with the reason.
  std::string start();

 private:
  struct Connection;  // one WebSocket and its Session

  static void on_http(SoupServer*, SoupServerMessage* msg, const char* path, GHashTable*, gpointer self);
  static void on_websocket(SoupServer*, SoupServerMessage*, const char* path,
                           SoupWebsocketConnection* ws, gpointer self);
  void on_text(Connection* connection, const std::string& text);
  void drop_connection(int id, const std::string& reason);
  void broadcast(const nlohmann::json& event);
  nlohmann::json stats() const;

  ServerOptions options_;
  ModelSet models_;
  SoupServer* server_ = nullptr;
  std::unique_ptr<ModelHolder> holder_;
  std::map<int, std::unique_ptr<Connection>> connections_;
  int next_id_ = 1;
  int sessions_opened_ = 0;
  int sessions_closed_ = 0;
  int bad_messages_ = 0;
};

// Sends one JSON message on a WebSocket if it is still open (invalid UTF-8 replaced).
void send_json(SoupWebsocketConnection* ws, const nlohmann::json& message);

}  // namespace glmvoice::web

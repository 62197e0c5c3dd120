#include "web_server.h"

#include <cstdio>
#include <stdexcept>

#include "web_assets.h"

namespace glmvoice::web {
namespace {

constexpr guint kKeepaliveSeconds = 5;        // a vanished browser is noticed within ~2 pings
constexpr gint64 kMaxMessageBytes = 256 * 1024;  // an SDP is a few KB; typed text at most 4 KB

void log_server(const std::string& text) { std::fprintf(stderr, "glmvoice-web: %s\n", text.c_str()); }

}  // namespace

struct WebServer::Connection {
  int id;
  SoupWebsocketConnection* ws;  // owned ref
  std::shared_ptr<Session> session;
  std::string close_reason;
};

void send_json(SoupWebsocketConnection* ws, const nlohmann::json& message) {
  if (!ws || soup_websocket_connection_get_state(ws) != SOUP_WEBSOCKET_STATE_OPEN) return;
  const std::string text = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  soup_websocket_connection_send_text(ws, text.c_str());
}

WebServer::WebServer(ServerOptions options, ModelSet models)
    : options_(std::move(options)), models_(std::move(models)) {}

WebServer::~WebServer() {
  // Taken out first: close() reports back through drop_connection(), which then finds nothing.
  std::map<int, std::unique_ptr<Connection>> connections;
  connections.swap(connections_);
  for (auto& [id, c] : connections) {
    g_signal_handlers_disconnect_by_data(c->ws, c.get());
    if (c->session) c->session->close("server shutting down");
    if (soup_websocket_connection_get_state(c->ws) == SOUP_WEBSOCKET_STATE_OPEN)
      soup_websocket_connection_close(c->ws, SOUP_WEBSOCKET_CLOSE_GOING_AWAY, "server shutting down");
    g_object_unref(c->ws);
  }
  if (server_) {
    soup_server_disconnect(server_);
    g_object_unref(server_);
  }
}

std::string WebServer::start() {

  server_ = soup_server_new("server-header", "glmvoice-web ", nullptr);
  soup_server_add_handler(server_, nullptr, &WebServer::on_http, this, nullptr);
  soup_server_add_websocket_handler(server_, "/ws", nullptr, nullptr, &WebServer::on_websocket, this, nullptr);
  GInetAddress* address = g_inet_address_new_from_string(options_.bind.c_str());
  if (!address) throw std::runtime_error("--bind " + options_.bind + ": not an IP address");
  GSocketAddress* socket_address = g_inet_socket_address_new(address, static_cast<guint16>(options_.port));
  g_object_unref(address);
  GError* error = nullptr;
  const gboolean ok = soup_server_listen(server_, socket_address, SoupServerListenOptions(0), &error);
  g_object_unref(socket_address);
  if (!ok) {
    std::string what = error->message;
    g_error_free(error);
    throw std::runtime_error("cannot listen on " + options_.bind + ":" + std::to_string(options_.port) + ": " + what);
  }
  // Listening first: a busy port fails before any model is loaded.
  holder_ = std::make_unique<ModelHolder>(models_, [this](const nlohmann::json& event) {
    if (event["type"] == "progress")
      log_server("models: " + event["element"].get<std::string>() + " " + event["kind"].get<std::string>() +
                 " " + event["text"].get<std::string>());
    else
      log_server("models: " + event["state"].get<std::string>() +
                 (event.contains("error") ? ": " + event["error"].get<std::string>() : ""));
    broadcast(event);
  });
  holder_->start();
  GSList* uris = soup_server_get_uris(server_);
  std::string url;
  if (uris) {
    gchar* text = g_uri_to_string(static_cast<GUri*>(uris->data));
    url = text;
    g_free(text);
  }
  g_slist_free_full(uris, reinterpret_cast<GDestroyNotify>(g_uri_unref));
  return url;
}

void WebServer::on_http(SoupServer*, SoupServerMessage* msg, const char* path, GHashTable*, gpointer data) {
  auto* self = static_cast<WebServer*>(data);
  const char* method = soup_server_message_get_method(msg);
  if (g_strcmp0(method, "GET") != 0 && g_strcmp0(method, "HEAD") != 0) {
    soup_server_message_set_status(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, nullptr);
    return;
  }
  if (g_strcmp0(path, "/stats") == 0) {
    const std::string body = self->stats().dump();
    soup_server_message_set_status(msg, SOUP_STATUS_OK, nullptr);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, body.data(), body.size());
    return;
  }
  const std::string wanted = g_strcmp0(path, "/") == 0 ? "/index.html" : path;
  const WebAsset* asset = find_web_asset(wanted);
  if (!asset) {
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, nullptr);
    return;
  }
  soup_server_message_set_status(msg, SOUP_STATUS_OK, nullptr);
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Cache-Control", "no-store");
  soup_server_message_set_response(msg, asset->mime, SOUP_MEMORY_STATIC,
                                   reinterpret_cast<const char*>(asset->data), asset->size);
}

void WebServer::on_websocket(SoupServer*, SoupServerMessage*, const char*, SoupWebsocketConnection* ws, gpointer data) {
  auto* self = static_cast<WebServer*>(data);
  const int id = self->next_id_++;
  auto connection = std::make_unique<Connection>();
  connection->id = id;
  connection->ws = SOUP_WEBSOCKET_CONNECTION(g_object_ref(ws));
  soup_websocket_connection_set_keepalive_interval(ws, kKeepaliveSeconds);
  soup_websocket_connection_set_max_incoming_payload_size(ws, kMaxMessageBytes);
  Connection* raw = connection.get();
  SoupWebsocketConnection* ws_ref = connection->ws;
  connection->session = std::make_shared<Session>(
      id, self->models_, self->options_.session,
      [ws_ref](const nlohmann::json& message) { send_json(ws_ref, message); },
      [self](int id, const std::string& reason) { self->drop_connection(id, reason); });
  self->connections_[id] = std::move(connection);
  self->sessions_opened_++;

  g_signal_connect(ws, "message", G_CALLBACK(+[](SoupWebsocketConnection*, gint type, GBytes* bytes, gpointer data) {
    auto* c = static_cast<Connection*>(data);
    auto* server = static_cast<WebServer*>(g_object_get_data(G_OBJECT(c->ws), "glmvoice-server"));
    if (type != SOUP_WEBSOCKET_DATA_TEXT) {
      server->bad_messages_++;
      log_server("session " + std::to_string(c->id) + ": binary message ignored");
      send_json(c->ws, {{"type", "error"}, {"message", "binary messages are not part of the protocol"}});
      return;
    }
    gsize size = 0;
    const char* text = static_cast<const char*>(g_bytes_get_data(bytes, &size));
    server->on_text(c, std::string(text ? text : "", size));
  }), raw);
  g_signal_connect(ws, "error", G_CALLBACK(+[](SoupWebsocketConnection*, GError* error, gpointer data) {
    auto* c = static_cast<Connection*>(data);
    c->close_reason = std::string("WebSocket error: ") + error->message;
  }), raw);
  g_signal_connect(ws, "closed", G_CALLBACK(+[](SoupWebsocketConnection* ws, gpointer data) {
    auto* c = static_cast<Connection*>(data);
    auto* server = static_cast<WebServer*>(g_object_get_data(G_OBJECT(ws), "glmvoice-server"));
    std::string reason = c->close_reason;
    if (reason.empty()) {
      const gushort code = soup_websocket_connection_get_close_code(ws);
      reason = "browser went away (WebSocket closed, code " + std::to_string(code) + ")";
    }
    // Keep the session alive through close(): close() ends in drop_connection().
    g_object_ref(ws);  // drop_connection() releases the connection's own reference
    std::shared_ptr<Session> session = c->session;
    if (session) session->close(reason);
    else server->drop_connection(c->id, reason);
    g_object_unref(ws);
  }), raw);
  g_object_set_data(G_OBJECT(ws), "glmvoice-server", self);

  log_server("session " + std::to_string(id) + ": connected");
  send_json(ws, {{"type", "welcome"},
                 {"session", id},
                 {"tiny", self->models_.tiny},
                 {"defaults", {{"max_new_tokens", self->options_.session.max_new_tokens},
                               {"temperature", 0.2}, {"top_p", 0.8}}},
                 {"models", self->holder_->status()}});
}

void WebServer::on_text(Connection* connection, const std::string& text) {
  std::shared_ptr<Session> session = connection->session;  // may close (and drop) during handle()
  if (!session) return;
  try {
    nlohmann::json message = nlohmann::json::parse(text);
    session->handle(message);
  } catch (const std::exception& e) {
    // Malformed signalling: say why to the page and in the log, keep the session.
    bad_messages_++;
    const std::string reason = dynamic_cast<const nlohmann::json::exception*>(&e)
                                   ? std::string("not JSON: ") + e.what()
                                   : std::string(e.what());
    log_server("session " + std::to_string(connection->id) + ": bad message: " + reason);
    send_json(connection->ws, {{"type", "error"}, {"message", "bad message: " + reason}});
  }
}

void WebServer::drop_connection(int id, const std::string& reason) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  std::unique_ptr<Connection> c = std::move(it->second);
  connections_.erase(it);
  sessions_closed_++;
  log_server("session " + std::to_string(id) + ": ended: " + reason);
  g_signal_handlers_disconnect_by_data(c->ws, c.get());
  if (soup_websocket_connection_get_state(c->ws) == SOUP_WEBSOCKET_STATE_OPEN) {
    send_json(c->ws, {{"type", "closed"}, {"reason", reason}});
    soup_websocket_connection_close(c->ws, SOUP_WEBSOCKET_CLOSE_NORMAL, nullptr);
  }
  g_object_unref(c->ws);
  // The Session object itself goes when the last callback holding it returns.
}

void WebServer::broadcast(const nlohmann::json& event) {
  for (auto& [id, c] : connections_) send_json(c->ws, event);
}

nlohmann::json WebServer::stats() const {
  return {{"sessions_open", connections_.size()},
          {"sessions_opened", sessions_opened_},
          {"sessions_closed", sessions_closed_},
          {"pipelines_alive", Session::pipelines_alive()},
          {"pipelines_freed", Session::pipelines_freed()},
          {"bad_messages", bad_messages_},
          {"models", holder_ ? holder_->status()["state"] : nlohmann::json("none")}};
}

}  // namespace glmvoice::web

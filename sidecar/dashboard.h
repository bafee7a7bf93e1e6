// The live dashboard (GET /dashboard): one self-contained HTML page, sidecar/dashboard.html,
// compiled into the binary (cmake/embed_text.cmake). The page itself holds no data: it polls
// /api/websocket/status and /metrics from the browser, so it is protected exactly as they are.
#pragma once

#include <string>
#include <string_view>

#include "handshake.h"

namespace sidecar {

// The page, its headers and its Content-Security-Policy.
HttpAnswer dashboard_answer();

// A policy that allows the page's one inline <script> and one inline <style> by their SHA-256
// hashes, fetches to its own origin and a data: favicon (so that the browser asks for no
// /favicon.ico, which would count as a refusal), and nothing else: no other script, style,
// image, font, frame, form target or base URL. Empty when the page does not have exactly one of
// each.
std::string dashboard_csp(std::string_view html);

} // namespace sidecar

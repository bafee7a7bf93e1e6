// JSON text; see json_text.h.
#include "json_text.h"

#include <nlohmann/json.hpp>

#include "encoding.h"

namespace sidecar {
namespace {

// A \uXXXX escape of one UTF-16 code unit.
void append_u_escape(std::string &out, uint32_t unit) {
  constexpr std::string_view kHex = "0123456789abcdef";
  out.append("\\u");
  for (int shift = 12; shift >= 0; shift -= 4)
    out.push_back(kHex[(unit >> shift) & 0xF]);
}

} // namespace

void json_escape_into(std::string &out, std::string_view s, bool ascii_only) {
  for (size_t i = 0; i < s.size();) {
    Utf8Step st = utf8_step(s, i);
    char32_t cp = st.valid ? st.code_point : U'\uFFFD';
    size_t start = i;
    i += st.len;
    switch (cp) {
    case U'"':
      out.append("\\\"");
      continue;
    case U'\\':
      out.append("\\\\");
      continue;
    case U'\n':
      out.append("\\n");
      continue;
    case U'\r':
      out.append("\\r");
      continue;
    case U'\t':
      out.append("\\t");
      continue;
    default:
      break;
    }
    if (cp < 0x20 || cp == 0x7F || cp == 0x2028 || cp == 0x2029 || (ascii_only && cp >= 0x80)) {
      if (cp > 0xFFFF) {
        char32_t v = cp - 0x10000;
        append_u_escape(out, static_cast<uint32_t>(0xD800 + (v >> 10)));
        append_u_escape(out, static_cast<uint32_t>(0xDC00 + (v & 0x3FF)));
      } else {
        append_u_escape(out, static_cast<uint32_t>(cp));
      }
    } else if (st.valid) {
      out.append(s.substr(start, st.len));
    } else {
      out.append("\xEF\xBF\xBD"); // U+FFFD
    }
  }
}

std::string json_quoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  json_escape_into(out, s);
  out.push_back('"');
  return out;
}

std::string json_text(const nlohmann::json &j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string json_text(const nlohmann::ordered_json &j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

} // namespace sidecar

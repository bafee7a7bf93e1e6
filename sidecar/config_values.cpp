// Config values: the small text parsers behind config checks and routing (host:port, Redis
// URLs, route templates, org ids, channel templates). Pure functions; config.cpp uses them while
// loading, the server uses match and expand on every upgrade.
#include "config.h"

#include <algorithm>
#include <charconv>

#include "client_ip.h"
#include "result.h"
#include "text.h"

namespace sidecar {
namespace {

bool is_ip(std::string_view host, IpAddress::Family family) {
  std::optional<IpAddress> ip = parse_ip(host);
  return ip && ip->family == family;
}

bool is_ipv4(std::string_view host) { return is_ip(host, IpAddress::Family::v4); }
bool is_ipv6(std::string_view host) { return is_ip(host, IpAddress::Family::v6); }

Result<uint16_t> parse_port(std::string_view text) {
  uint64_t port = 0;
  if (!parse_u64(text, port) || port < 1 || port > 65535)
    return Result<uint16_t>::fail("port must be 1..65535, got " + quote(text));
  return static_cast<uint16_t>(port);
}

Result<int> parse_db(std::string_view text) {
  uint64_t db = 0;
  if (!parse_u64(text, db) || db > 15)
    return Result<int>::fail("database must be 0..15, got " + quote(text));
  return static_cast<int>(db);
}

// unix:///path[?db=N]; r has its url fields cleared.
Result<RedisConfig> parse_unix_url(const std::string &url, RedisConfig r) {
  std::string_view rest = std::string_view(url).substr(7);
  size_t query = rest.find('?');
  r.unix_path = std::string(rest.substr(0, query));
  if (!r.unix_path.starts_with("/"))
    return Result<RedisConfig>::fail(
        "unix socket path must be absolute, like unix:///run/redis.sock, got " + quote(url));
  if (query != std::string_view::npos) {
    std::string_view q = rest.substr(query + 1);
    if (!q.starts_with("db="))
      return Result<RedisConfig>::fail("the only query parameter is db=N, got " + quote(q));
    Result<int> db = parse_db(q.substr(3));
    if (!db)
      return Result<RedisConfig>::fail(db.error);
    r.db = *db;
  }
  return r;
}

} // namespace

Result<HostPort> parse_host_port(const std::string &text) {
  std::string host;
  std::string_view port;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Result<HostPort>::fail("must be [IPv6]:PORT like \"[::1]:8080\", got " + quote(text));
    host = text.substr(1, close - 1);
    port = std::string_view(text).substr(close + 2);
    if (!is_ipv6(host))
      return Result<HostPort>::fail(quote(host) + " is not an IPv6 address");
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return Result<HostPort>::fail("must be HOST:PORT like \"127.0.0.1:8080\", got " +
                                    quote(text));
    host = text.substr(0, colon);
    port = std::string_view(text).substr(colon + 1);
    if (host.find(':') != std::string::npos)
      return Result<HostPort>::fail("IPv6 addresses need brackets, like \"[::1]:8080\", got " +
                                    quote(text));
    // Only numeric addresses and localhost: resolving names at bind time would make the
    // listening address depend on DNS.
    if (host != "localhost" && !is_ipv4(host))
      return Result<HostPort>::fail("host must be an IPv4 address, [IPv6] or localhost, got " +
                                    quote(host));
  }
  Result<uint16_t> port_number = parse_port(port);
  if (!port_number)
    return Result<HostPort>::fail(port_number.error);
  return HostPort{std::move(host), *port_number};
}

Result<RedisConfig> parse_redis_url(const std::string &url, const RedisConfig &base) {
  RedisConfig r = base;
  r.url = url;
  r.host.clear();
  r.port = 0;
  r.unix_path.clear();
  r.username.clear();
  r.password.clear();
  r.db = 0;
  if (url.starts_with("rediss://"))
    return Result<RedisConfig>::fail(
        "TLS is not supported (rediss://); use redis:// on a trusted network or a local "
        "TLS proxy");
  if (url.starts_with("unix://"))
    return parse_unix_url(url, std::move(r));
  if (!url.starts_with("redis://"))
    return Result<RedisConfig>::fail(
        "must be redis://[user[:password]@]host[:port][/db] or unix:///path[?db=N], got " +
        quote(url));
  std::string_view rest = std::string_view(url).substr(8);
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      Result<int> number = parse_db(db);
      if (!number)
        return Result<RedisConfig>::fail(number.error);
      r.db = *number;
    }
  }
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    size_t colon = userinfo.find(':');
    // Redis URLs may carry percent-encoded user names and passwords ("p%40ss" for "p@ss").
    std::optional<std::string> user =
        percent_decode(userinfo.substr(0, colon), PercentRule::strict);
    std::optional<std::string> password =
        colon == std::string_view::npos
            ? std::optional<std::string>("")
            : percent_decode(userinfo.substr(colon + 1), PercentRule::strict);
    if (!user || !password)
      return Result<RedisConfig>::fail("bad percent-encoding in the user or password");
    r.username = std::move(*user);
    r.password = std::move(*password);
    authority = authority.substr(at + 1);
  }
  std::string_view port = "6379";
  if (authority.starts_with("[")) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos)
      return Result<RedisConfig>::fail("unclosed \"[\" in the host of " + quote(url));
    r.host = std::string(authority.substr(1, close - 1));
    if (!is_ipv6(r.host))
      return Result<RedisConfig>::fail(quote(r.host) + " is not an IPv6 address");
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(":"))
      return Result<RedisConfig>::fail("unexpected " + quote(after) + " after the host");
    if (!after.empty())
      port = after.substr(1);
  } else {
    size_t colon = authority.find(':');
    r.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos)
      port = authority.substr(colon + 1);
  }
  // A bracketed host was checked as IPv6 above; a plain one is a name or an IPv4 address.
  bool name_ok = !r.host.empty() &&
                 (is_ipv6(r.host) ||
                  r.host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                           "0123456789.-") == std::string::npos);
  if (!name_ok)
    return Result<RedisConfig>::fail("missing or invalid host in " + quote(url));
  Result<uint16_t> port_number = parse_port(port);
  if (!port_number)
    return Result<RedisConfig>::fail(port_number.error);
  r.port = *port_number;
  return r;
}

Result<Route> parse_route_template(const std::string &path) {
  constexpr std::string_view kOrg = "{org}";
  if (!path.starts_with("/"))
    return Result<Route>::fail("must start with \"/\", like \"/ws/{org}\", got " + quote(path));
  size_t pos = path.find(kOrg);
  if (pos == std::string::npos || path.find(kOrg, pos + 1) != std::string::npos)
    return Result<Route>::fail("must contain \"{org}\" exactly once, like \"/ws/{org}\", got " +
                               quote(path));
  size_t end = pos + kOrg.size();
  if (path[pos - 1] != '/' || (end < path.size() && path[end] != '/'))
    return Result<Route>::fail("\"{org}\" must be a whole path segment, like \"/ws/{org}\", got " +
                               quote(path));
  std::string rest = path.substr(0, pos) + path.substr(end);
  if (rest.find_first_of("{}") != std::string::npos)
    return Result<Route>::fail("must not contain braces other than \"{org}\", got " + quote(path));
  if (rest.find_first_of("?# \t") != std::string::npos)
    return Result<Route>::fail("must be a plain path without a query, fragment or spaces, got " +
                               quote(path));
  Route route;
  route.path = path;
  route.prefix = path.substr(0, pos);
  route.suffix = path.substr(end);
  return route;
}

bool is_valid_org(std::string_view org) {
  if (org.empty() || org.size() > 128)
    return false;
  return std::all_of(org.begin(), org.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
  });
}

const Route *match_route(const std::vector<Route> &routes, std::string_view path,
                         std::string &org) {
  for (const Route &r : routes) {
    if (path.size() <= r.prefix.size() + r.suffix.size() || !path.starts_with(r.prefix) ||
        !path.ends_with(r.suffix)) {
      continue;
    }
    std::string_view middle =
        path.substr(r.prefix.size(), path.size() - r.prefix.size() - r.suffix.size());
    if (middle.find('/') != std::string_view::npos)
      continue;
    org = std::string(middle);
    return &r;
  }
  return nullptr;
}

std::string expand_channel(const std::string &tmpl, std::string_view org, std::string_view user) {
  // One pass over the template, so that a user id containing "{org}" is never expanded again.
  std::string out;
  out.reserve(tmpl.size() + org.size() + user.size());
  for (size_t i = 0; i < tmpl.size();) {
    std::string_view rest = std::string_view(tmpl).substr(i);
    if (rest.starts_with("{org}")) {
      out += org;
      i += 5;
    } else if (rest.starts_with("{user}")) {
      out += user;
      i += 6;
    } else {
      out += tmpl[i++];
    }
  }
  return out;
}

Result<HostPort> parse_cluster_seed(const std::string &text, std::string &username,
                                    std::string &password, bool &has_credentials) {
  bool url = text.starts_with("redis://") || text.find("://") != std::string::npos;
  Result<RedisConfig> r = parse_redis_url(url ? text : "redis://" + text, RedisConfig{});
  if (!r) {
    // parse_redis_url speaks of URLs; a bare entry deserves an answer in its own terms.
    return Result<HostPort>::fail(url ? r.error
                                      : "must be HOST:PORT or redis://[user[:password]@]host:port, "
                                        "got " +
                                            quote(text));
  }
  if (!r->unix_path.empty())
    return Result<HostPort>::fail("a cluster node must be reached over TCP, got " + quote(text));
  if (r->db != 0)
    return Result<HostPort>::fail("Redis Cluster has only db 0, got " + quote(text));
  has_credentials = !r->password.empty() || !r->username.empty();
  username = r->username;
  password = r->password;
  return HostPort{r->host, r->port};
}

} // namespace sidecar

// bench_naive_floor: the smallest server that does the sidecar's job, as a floor to compare
// against. One epoll loop; clients upgrade on GET /ws/{room}; the first member of a room
// SUBSCRIBEs org:{room}; each published message is framed once and write()n to every member.
// No welcome, no pings, no limits beyond a cap on one client's unsent bytes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kMaxUnsent = 8 << 20; // a client this far behind is dropped
constexpr uint64_t kRedisTag = ~0ULL;
constexpr uint64_t kListenTag = ~0ULL - 1;

struct Client {
  int fd = -1;
  bool upgraded = false;
  bool want_out = false;
  std::string room;
  size_t slot = 0; // index in its room's member list
  std::string in;  // request head until the upgrade
  std::string out; // unsent bytes once a write came up short
};

struct Floor {
  int ep = -1;
  int listen_fd = -1;
  int redis_fd = -1;
  redisReader *reader = nullptr;
  std::string redis_out;
  std::vector<Client> clients; // by fd
  std::unordered_map<std::string, std::vector<int>> rooms;
  std::string path_prefix = "/ws/";
};

Floor g;
volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

void set_events(int fd, uint32_t events, uint64_t tag, int op) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag;
  epoll_ctl(g.ep, op, fd, &ev);
}

void redis_send(const std::string &cmd) {
  g.redis_out += cmd;
  const ssize_t w = ::write(g.redis_fd, g.redis_out.data(), g.redis_out.size());
  if (w > 0) {
    g.redis_out.erase(0, static_cast<size_t>(w));
  }
  set_events(g.redis_fd, g.redis_out.empty() ? EPOLLIN : EPOLLIN | EPOLLOUT, kRedisTag,
             EPOLL_CTL_MOD);
}

// RESP encoding of a two-word command; append() rather than operator+ keeps GCC 12's
// -Wrestrict false positive away.
std::string resp(const char *verb, const std::string &channel) {
  std::string s = "*2\r\n$";
  s.append(std::to_string(std::strlen(verb))).append("\r\n").append(verb).append("\r\n$");
  s.append(std::to_string(channel.size())).append("\r\n").append(channel).append("\r\n");
  return s;
}

void drop(int fd) {
  Client &c = g.clients[static_cast<size_t>(fd)];
  if (c.upgraded) {
    auto &members = g.rooms[c.room];
    const int moved = members.back();
    members[c.slot] = moved;
    g.clients[static_cast<size_t>(moved)].slot = c.slot;
    members.pop_back();
    if (members.empty()) {
      g.rooms.erase(c.room);
      redis_send(resp("UNSUBSCRIBE", std::string("org:").append(c.room)));
    }
  }
  ::close(fd);
  c = Client{};
}

void send_bytes(int fd, const char *data, size_t n) {
  Client &c = g.clients[static_cast<size_t>(fd)];
  if (c.out.empty()) {
    const ssize_t w = ::write(fd, data, n);
    if (w == static_cast<ssize_t>(n)) {
      return;
    }
    if (w < 0 && errno != EAGAIN) {
      drop(fd);
      return;
    }
    const size_t done = w > 0 ? static_cast<size_t>(w) : 0;
    data += done;
    n -= done;
  }
  if (c.out.size() + n > kMaxUnsent) {
    drop(fd);
    return;
  }
  c.out.append(data, n);
  if (!c.want_out) {
    c.want_out = true;
    set_events(fd, EPOLLIN | EPOLLOUT, static_cast<uint64_t>(fd), EPOLL_CTL_MOD);
  }
}

std::string accept_key(const std::string &key) {
  const std::string src = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char *>(src.data()), src.size(), digest);
  unsigned char out[64];
  const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char *>(out), static_cast<size_t>(n));
}

std::string header_value(const std::string &head, const char *name) {
  // Case-insensitive search for "\r\nName:"; good enough for the bench's own clients.
  const size_t nlen = std::strlen(name);
  for (size_t p = head.find("\r\n"); p != std::string::npos; p = head.find("\r\n", p + 2)) {
    if (strncasecmp(head.c_str() + p + 2, name, nlen) == 0 && head[p + 2 + nlen] == ':') {
      size_t v = p + 3 + nlen;
      while (v < head.size() && head[v] == ' ') {
        ++v;
      }
      return head.substr(v, head.find("\r\n", v) - v);
    }
  }
  return {};
}

void on_client_read(int fd) {
  Client &c = g.clients[static_cast<size_t>(fd)];
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  if (n < 0 && errno == EAGAIN) {
    return;
  }
  if (n <= 0) {
    drop(fd);
    return;
  }
  if (c.upgraded) {
    // Clients send nothing but a close frame; answer any close and hang up.
    if ((static_cast<uint8_t>(buf[0]) & 0x0f) == 0x8) {
      const char close_frame[4] = {static_cast<char>(0x88), 2, 0x03, static_cast<char>(0xe8)};
      [[maybe_unused]] ssize_t w = ::write(fd, close_frame, 4);
      drop(fd);
    }
    return;
  }
  c.in.append(buf, static_cast<size_t>(n));
  const size_t end = c.in.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (c.in.size() > 8192) {
      drop(fd);
    }
    return;
  }
  const std::string head = c.in.substr(0, end + 2);
  const std::string key = header_value(head, "Sec-WebSocket-Key");
  const std::string want = "GET " + g.path_prefix;
  const size_t sp = head.find(' ', want.size());
  if (!head.starts_with(want) || key.empty() || sp == std::string::npos || sp == want.size()) {
    const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    [[maybe_unused]] ssize_t w = ::write(fd, bad, sizeof bad - 1);
    drop(fd);
    return;
  }
  c.room = head.substr(want.size(), sp - want.size());
  c.in.clear();
  c.in.shrink_to_fit();
  const std::string answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: " +
                             accept_key(key) + "\r\n\r\n";
  c.upgraded = true;
  auto &members = g.rooms[c.room];
  if (members.empty()) {
    redis_send(resp("SUBSCRIBE", std::string("org:").append(c.room)));
  }
  c.slot = members.size();
  members.push_back(fd);
  send_bytes(fd, answer.data(), answer.size());
}

void on_client_write(int fd) {
  Client &c = g.clients[static_cast<size_t>(fd)];
  const ssize_t w = ::write(fd, c.out.data(), c.out.size());
  if (w < 0 && errno != EAGAIN) {
    drop(fd);
    return;
  }
  if (w > 0) {
    c.out.erase(0, static_cast<size_t>(w));
  }
  if (c.out.empty()) {
    c.want_out = false;
    set_events(fd, EPOLLIN, static_cast<uint64_t>(fd), EPOLL_CTL_MOD);
  }
}

void fan_out(const redisReply *r) {
  // Push messages are ["message", channel, payload]; subscribe confirmations are ignored.
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      std::strcmp(r->element[0]->str, "message") != 0) {
    return;
  }
  const std::string channel(r->element[1]->str, r->element[1]->len);
  auto it = g.rooms.find(channel.substr(4));
  if (it == g.rooms.end()) {
    return;
  }
  const size_t n = r->element[2]->len;
  std::string frame;
  frame.reserve(n + 10);
  frame.push_back(static_cast<char>(0x81));
  if (n < 126) {
    frame.push_back(static_cast<char>(n));
  } else if (n < 65536) {
    frame.push_back(126);
    frame.push_back(static_cast<char>(n >> 8));
    frame.push_back(static_cast<char>(n & 0xff));
  } else {
    frame.push_back(127);
    for (int i = 7; i >= 0; --i) {
      frame.push_back(static_cast<char>((static_cast<uint64_t>(n) >> (8 * i)) & 0xff));
    }
  }
  frame.append(r->element[2]->str, n);
  // Copy the member list: a failed write drops a member and reorders the original.
  const std::vector<int> members = it->second;
  for (int fd : members) {
    if (g.clients[static_cast<size_t>(fd)].fd == fd) {
      send_bytes(fd, frame.data(), frame.size());
    }
  }
}

bool on_redis_read() {
  char buf[1 << 16];
  const ssize_t n = ::read(g.redis_fd, buf, sizeof buf);
  if (n < 0 && errno == EAGAIN) {
    return true;
  }
  if (n <= 0) {
    std::fprintf(stderr, "naive_floor: redis connection lost\n");
    return false;
  }
  redisReaderFeed(g.reader, buf, static_cast<size_t>(n));
  void *reply = nullptr;
  while (redisReaderGetReply(g.reader, &reply) == REDIS_OK && reply != nullptr) {
    fan_out(static_cast<redisReply *>(reply));
    freeReplyObject(reply);
    reply = nullptr;
  }
  return true;
}

int tcp_socket(const char *hostport, bool listen_mode) {
  std::string hp(hostport);
  const size_t colon = hp.rfind(':');
  if (colon == std::string::npos) {
    return -1;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(hp.c_str() + colon + 1)));
  if (inet_pton(AF_INET, hp.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    return -1;
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listen_mode) {
    if (::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        ::listen(fd, 4096) != 0) {
      return -1;
    }
  } else if (::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
    return -1;
  }
  // Both the listener (accept loop) and the Redis socket are driven by epoll.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

} // namespace

int main(int argc, char **argv) {
  const char *listen_at = "127.0.0.1:8090";
  const char *redis_at = "127.0.0.1:6379";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--listen") == 0) {
      listen_at = argv[i + 1];
    } else if (std::strcmp(argv[i], "--redis") == 0) {
      redis_at = argv[i + 1];
    } else if (std::strcmp(argv[i], "--path-prefix") == 0) {
      g.path_prefix = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: bench_naive_floor --listen HOST:PORT --redis HOST:PORT "
                           "[--path-prefix /ws/]\n");
      return 2;
    }
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  g.clients.resize(rl.rlim_cur + 16);

  g.listen_fd = tcp_socket(listen_at, true);
  g.redis_fd = tcp_socket(redis_at, false);
  if (g.listen_fd < 0 || g.redis_fd < 0) {
    std::fprintf(stderr, "naive_floor: cannot listen on %s or reach redis at %s: %s\n", listen_at,
                 redis_at, std::strerror(errno));
    return 1;
  }
  g.reader = redisReaderCreate();
  g.ep = epoll_create1(EPOLL_CLOEXEC);
  set_events(g.listen_fd, EPOLLIN, kListenTag, EPOLL_CTL_ADD);
  set_events(g.redis_fd, EPOLLIN, kRedisTag, EPOLL_CTL_ADD);
  std::fprintf(stderr, "naive_floor: listening on %s\n", listen_at);

  epoll_event events[512];
  while (g_stop == 0) {
    const int n = epoll_wait(g.ep, events, 512, 200);
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kListenTag) {
        for (;;) {
          const int fd = accept4(g.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) {
            break;
          }
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          g.clients[static_cast<size_t>(fd)].fd = fd;
          set_events(fd, EPOLLIN, static_cast<uint64_t>(fd), EPOLL_CTL_ADD);
        }
      } else if (tag == kRedisTag) {
        if ((events[i].events & EPOLLOUT) != 0) {
          redis_send("");
        }
        if ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && !on_redis_read()) {
          return 1;
        }
      } else {
        const int fd = static_cast<int>(tag);
        if (g.clients[static_cast<size_t>(fd)].fd != fd) {
          continue;
        }
        if ((events[i].events & EPOLLOUT) != 0) {
          on_client_write(fd);
        }
        if (g.clients[static_cast<size_t>(fd)].fd == fd &&
            (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
          on_client_read(fd);
        }
      }
    }
  }
  redisReaderFree(g.reader);
  return 0;
}

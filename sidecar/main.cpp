// sidecar: arguments, configuration, the Server, the loop. Nothing else.
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "config.h"
#include "jwt.h"
#include "log.h"
#include "server.h"

namespace {

void usage(FILE *out) {
  fprintf(out,
          "usage: sidecar --config FILE       run with FILE (YAML)\n"
          "       sidecar --check-config FILE validate FILE; exit 0 when valid, 1 otherwise\n"
          "       sidecar --version\n"
          "       sidecar --help\n"
          "Environment: SIDECAR_REDIS_URL, SIDECAR_JWT_SECRET, SIDECAR_ADMIN_TOKEN override the\n"
          "file's redis.url, auth.jwt.secret and admin.token.\n");
}

} // namespace

int main(int argc, char **argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--version") {
      printf("sidecar %s\n", SIDECAR_VERSION);
      return 0;
    }
    if ((a == "--config" || a == "--check-config") && i + 1 < argc) {
      check_only = check_only || a == "--check-config";
      config_path = argv[++i];
      continue;
    }
    fprintf(stderr, "sidecar: unknown argument \"%s\"\n", a.c_str());
    usage(stderr);
    return 2;
  }
  if (config_path.empty()) {
    usage(stderr);
    return 2;
  }
  sidecar::ConfigResult r = sidecar::load_config_file(config_path, sidecar::process_env());
  if (!r.ok()) {
    for (const auto &e : r.errors)
      fprintf(stderr, "%s\n", e.to_string().c_str());
    fprintf(stderr, "sidecar: %zu error(s) in %s\n", r.errors.size(), config_path.c_str());
    return 1;
  }
  if (check_only) {
    // Key files are loaded here too, so that a bad PEM or JWKS fails the check, not the start.
    if (r.config.auth.mode == sidecar::AuthConfig::Mode::jwt) {
      std::string err;
      if (!sidecar::JwtVerifier::create(r.config.auth.jwt, err)) {
        fprintf(stderr, "%s: auth.jwt: %s\n", config_path.c_str(), err.c_str());
        return 1;
      }
    }
    printf("%s: ok\n", config_path.c_str());
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  sidecar::log_configure(r.config.log.level, r.config.log.format);
  uv_loop_t *loop = uv_default_loop();
  int code = 0;
  {
    sidecar::Server server(loop, std::move(r.config));
    if (!server.start()) {
      code = 1;
    } else {
      // The loop ends once shutdown has closed every handle: a clean exit.
      uv_run(loop, UV_RUN_DEFAULT);
    }
  }
  if (code != 0)
    return code; // handles may still be open; exit without tearing down the loop
  uv_loop_close(loop);
  return code;
}

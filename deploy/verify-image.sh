#!/usr/bin/env bash
# Proves deploy/Dockerfile's steps on a machine without a Docker engine.
#
# What it proves, stage by stage and in the Dockerfile's own words (it parses the Dockerfile, so
# it follows every edit; nothing here repeats its package lists or commands):
#   * a Debian root like debian:bookworm-slim (mmdebstrap --variant=minbase with the slim image's
#     dpkg path-excludes) is made from the Debian mirror apt on this machine already uses;
#   * every stage's RUN instructions run in a copy of that root (chroot, as the stage's USER, in
#     its WORKDIR, with its ENV), and every COPY copies what docker build would: sources from the
#     build context filtered by deploy/Dockerfile.dockerignore, --from=<stage> from that stage;
#   * in the final stage: ldd finds every library the binary links, and the image's ENTRYPOINT +
#     CMD start as its USER with the shipped config (in a private network namespace, like a
#     container's, with a throw-away redis-server when the config's Redis host does not resolve
#     here), the image's HEALTHCHECK command turns healthy, /ready answers 200, and the
#     STOPSIGNAL makes it exit 0.
# It prints a PASS/FAIL summary with timings and the image-equivalent size (du of the final root).
#
# It DOWNLOADS a Debian root file system and the build stage's packages (a few hundred MB), needs
# root (chroot, mount, unshare) and takes several minutes, so CI and scripts/test.sh do not run it.
#
# Usage (as root, from anywhere):
#   deploy/verify-image.sh [WORKDIR]
#     WORKDIR        where the roots go; default a mktemp dir under /tmp. Removed at exit (only
#                    what this script made in it, when given) unless KEEP=1.
#     KEEP=1         keep WORKDIR; a later run with the same WORKDIR reuses its base root.
#     CONTEXT=DIR    build context (default: the repository root, as `docker build .` there).
#     DOCKERFILE=F   default: $CONTEXT/deploy/Dockerfile
#     NETNS=0        run the final container in the host's network namespace instead.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONTEXT="$(cd "${CONTEXT:-$SCRIPT_DIR/..}" && pwd)"
DOCKERFILE="${DOCKERFILE:-$CONTEXT/deploy/Dockerfile}"
KEEP="${KEEP:-0}"
NETNS="${NETNS:-1}"
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOSTID=verify-image   # stands in for the container id docker uses as HOSTNAME

T_START=$EPOCHREALTIME
# Two cores are shared with others: everything below (compilers included) runs at low priority.
renice -n 10 -p $$ >/dev/null 2>&1 || true
ionice -c 3 -p $$ >/dev/null 2>&1 || true
say() { printf '[%6.1fs] %s\n' "$(elapsed "$T_START")" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

[[ $EUID -eq 0 ]] || die "needs root (chroot, mount, unshare)"
for tool in python3 chroot mount umount awk du; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -f $DOCKERFILE ]] || die "no Dockerfile at $DOCKERFILE"

if [[ $# -ge 1 ]]; then
  WORK_GIVEN=1
  mkdir -p "$1"
  WORK="$(cd "$1" && pwd -P)"
else
  WORK_GIVEN=0
  WORK="$(mktemp -d /tmp/verify-image.XXXXXX)"
fi
case "$WORK" in /|/tmp|/root|/home|/usr|/var|/etc|"$CONTEXT") die "refusing WORKDIR $WORK" ;; esac
LOGS="$WORK/logs"
HELPER="$WORK/helper.py"

# ------------------------------------------------------------------------------- state + cleanup
RESULTS=()          # "PASS|FAIL <seconds> <name>"
MOUNTS=()           # mount points under $WORK, unmounted in reverse order
BG_PIDS=()          # processes this script started (redis-server, the sidecar)
NS_FILE=""          # persistent network namespace, a bind mount on a file
FINISHED=0
SIZES=""

mounted_under_work() {
  awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo
}

umount_all() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null ||
      echo "warning: could not unmount ${MOUNTS[i]}" >&2
  done
  MOUNTS=()
}

summary() {
  local line failed=0
  echo
  echo "================================ verify-image summary ================================"
  echo "Dockerfile: $DOCKERFILE"
  for line in "${RESULTS[@]}"; do
    [[ $line == FAIL* ]] && failed=1
    printf '  %s\n' "$line"
  done
  [[ -n $SIZES ]] && printf '%s\n' "$SIZES"
  printf '  total: %ss\n' "$(elapsed "$T_START")"
  if [[ $FINISHED -eq 1 && $failed -eq 0 ]]; then
    echo "RESULT: PASS"
  else
    echo "RESULT: FAIL"
  fi
  echo "======================================================================================"
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${BG_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
  umount_all
  if [[ -n $NS_FILE ]]; then umount "$NS_FILE" 2>/dev/null || umount -l "$NS_FILE" 2>/dev/null || true; fi
  summary
  if [[ $KEEP == 1 ]]; then
    echo "kept $WORK (logs in $LOGS)"
  elif [[ -n "$(mounted_under_work)" ]]; then
    echo "NOT removing $WORK: still mounted: $(mounted_under_work | tr '\n' ' ')" >&2
  elif [[ $WORK_GIVEN -eq 0 ]]; then
    rm -rf --one-file-system "$WORK"
  else
    rm -rf --one-file-system "$WORK/base" "$WORK/base.complete" "$WORK/stages" "$WORK/context" \
      "$LOGS" "$HELPER" "$WORK/plan" "$WORK/mirrors" "$WORK/netns"
  fi
  if [[ $rc -eq 0 && $FINISHED -eq 1 ]] && grep -q '^FAIL' <(printf '%s\n' "${RESULTS[@]}"); then rc=1; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step NAME CMD...: runs CMD (a function or command; set -e does not apply inside it, so steps
# check their own commands), records PASS/FAIL with its duration, returns CMD's status.
step() {
  local name="$1" t0=$EPOCHREALTIME rc=0
  shift
  say "── $name"
  "$@" || rc=$?
  if [[ $rc -eq 0 ]]; then
    RESULTS+=("PASS $(printf '%7ss' "$(elapsed "$t0")")  $name")
  else
    RESULTS+=("FAIL $(printf '%7ss' "$(elapsed "$t0")")  $name (exit $rc)")
  fi
  return "$rc"
}

# show_log FILE [N]: the last N lines of a step's log, indented.
show_log() { tail -n "${2:-3}" "$1" | sed 's/^/      | /'; }

# --------------------------------------------------------------------------------------- helper
# Dockerfile parsing, build context filtering, COPY semantics and apt source discovery are in
# Python (standard library only).
if [[ -n "$(mounted_under_work)" ]]; then die "something is still mounted under $WORK"; fi
rm -rf --one-file-system "$WORK/stages" "$WORK/context" "$LOGS" "$WORK/netns"
mkdir -p "$LOGS" "$WORK/stages"
cat >"$HELPER" <<'PY'
import fnmatch, glob, json, os, re, shlex, shutil, socket, sys
from urllib.parse import urlparse


def fail(msg):
    sys.exit(f"helper: {msg}")


# ---- Dockerfile -> plan: one shell-quoted record per line, for bash's `eval set --`.
def logical_lines(text):
    out, buf, start = [], None, 0
    for no, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        s = line.strip()
        if buf is None:
            if not s or s.startswith("#"):
                continue
            buf, start = "", no
        elif not s or s.startswith("#"):
            continue  # comment and empty lines inside a continuation are dropped, as docker does
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1]
            continue
        out.append((start, buf + line))
        buf = None
    if buf is not None:
        out.append((start, buf))
    return out


def seconds(d):
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", d):
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        pos = m.end()
    if pos != len(d):
        fail(f"bad duration {d!r}")
    return total


def argv(rest):
    rest = rest.strip()
    if rest.startswith("["):
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


def flags(rest):
    out = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, val = word[2:].partition("=")
        out[key] = val
        rest = rest.lstrip()
    return out, rest


def plan(path):
    recs = []
    emit = lambda *w: recs.append(shlex.join(str(x) for x in w))
    workdir, user, stage = "/", "root", -1
    for no, line in logical_lines(open(path).read()):
        word, _, rest = line.strip().partition(" ")
        kw, rest = word.upper(), rest.strip()
        if kw == "FROM":
            f, rest = flags(rest)
            parts = rest.split()
            image = parts[0]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stage += 1
            workdir, user = "/", "root"
            emit("FROM", image, name or str(stage))
        elif stage < 0:
            if kw != "ARG":
                fail(f"line {no}: {kw} before FROM")
        elif kw == "RUN":
            f, rest = flags(rest)
            if f:
                fail(f"line {no}: RUN flags {sorted(f)} are not emulated")
            if re.match(r"<<-?[\"']?\w", rest):
                fail(f"line {no}: RUN heredocs are not emulated")
            emit("RUN", no, user, workdir, *argv(rest))
        elif kw == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, rest))
            emit("WORKDIR", workdir)
        elif kw in ("COPY", "ADD"):
            f, rest = flags(rest)
            unknown = set(f) - {"from", "chown", "chmod", "link"}
            if unknown or kw == "ADD":
                fail(f"line {no}: {kw} {sorted(unknown)} is not emulated")
            words = json.loads(rest) if rest.startswith("[") else rest.split()
            *srcs, dst = words
            if not srcs:
                fail(f"line {no}: COPY without a source")
            if not dst.startswith("/"):
                slash = dst.endswith("/") or dst == "."
                dst = os.path.normpath(os.path.join(workdir, dst)).rstrip("/") + ("/" if slash else "")
            emit("COPY", no, f.get("from", ""), f.get("chown", ""), f.get("chmod", ""), dst, *srcs)
        elif kw == "USER":
            user = rest
            emit("USER", rest)
        elif kw == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:
                emit("ENV", words[0], rest.split(None, 1)[1] if len(words) > 1 else "")
            else:
                for w in words:
                    k, _, v = w.partition("=")
                    emit("ENV", k, v)
        elif kw in ("ENTRYPOINT", "CMD"):
            emit(kw, *argv(rest))
        elif kw == "HEALTHCHECK":
            if rest.upper() == "NONE":
                emit("HEALTHCHECK", "none")
                continue
            f, rest = flags(rest)
            opt = {"interval": "30s", "timeout": "30s", "start-period": "0s", "retries": "3"} | f
            c, _, rest = rest.partition(" ")
            if c.upper() != "CMD":
                fail(f"line {no}: HEALTHCHECK without CMD")
            emit("HEALTHCHECK", seconds(opt["interval"]), seconds(opt["timeout"]),
                 seconds(opt["start-period"]), int(opt["retries"]), *argv(rest))
        elif kw in ("STOPSIGNAL", "EXPOSE"):
            emit(kw, *rest.split())
        elif kw in ("LABEL", "MAINTAINER", "ARG"):
            pass  # metadata only
        else:
            fail(f"line {no}: {kw} is not emulated")
    print("\n".join(recs))


# ---- build context filtered like BuildKit (moby/patternmatcher semantics, close enough).
def ignore_patterns(path):
    pats = []
    if path and os.path.exists(path):
        for line in open(path):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            neg = s.startswith("!")
            s = os.path.normpath(s[1:].strip() if neg else s).lstrip("/")
            pats.append((neg, s, re.compile(pattern_regex(s))))
    return pats


def pattern_regex(p):
    out, i = "^", 0
    while i < len(p):
        c = p[i]
        if p.startswith("**/", i):
            out += "(.*/)?"; i += 3; continue
        if p.startswith("**", i):
            out += ".*"; i += 2; continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = p.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += "[" + p[i + 1:j].replace("\\", "\\\\") + "]"; i = j
        else:
            out += re.escape(c)
        i += 1
    return out + "$"


def excluded(pats, rel):
    parents = rel.split("/")[:-1]
    matched = False
    for neg, _, rx in pats:
        if neg != matched:
            continue
        m = bool(rx.match(rel)) or any(rx.match("/".join(parents[:i + 1]))
                                       for i in range(len(parents)))
        if m:
            matched = not neg
    return matched


def may_reinclude(pats, reldir):
    for neg, p, _ in pats:
        if not neg:
            continue
        lit = re.split(r"[*?\[]", p, 1)[0]
        if lit.startswith(reldir + "/") or (reldir + "/").startswith(lit) or "**" in p:
            return True
    return False


def context(src, ignorefile, dst):
    pats = ignore_patterns(ignorefile)
    files = size = 0
    for root, dirs, names in os.walk(src):
        rel_root = os.path.relpath(root, src)
        rel_root = "" if rel_root == "." else rel_root + "/"
        keep = []
        for d in sorted(dirs):
            rel = rel_root + d
            full = os.path.join(root, d)
            if os.path.islink(full):
                names.append(d)
            elif not excluded(pats, rel) or may_reinclude(pats, rel):
                keep.append(d)
        dirs[:] = keep
        for n in names:
            rel = rel_root + n
            if excluded(pats, rel):
                continue
            out = os.path.join(dst, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copy2(os.path.join(root, n), out, follow_symlinks=False)
            files += 1
            size += os.lstat(out).st_size
    print(f"{files} files, {size} bytes")


# ---- COPY: docker's semantics for sources (dir -> its contents) and destinations.
def ids(root, spec):
    def look(db, name):
        if name.isdigit():
            return int(name)
        for line in open(os.path.join(root, "etc", db)):
            f = line.split(":")
            if f[0] == name:
                return int(f[2])
        fail(f"no {name} in {db}")
    if not spec:
        return 0, 0
    u, _, g = spec.partition(":")
    uid = look("passwd", u)
    return uid, look("group", g) if g else uid


def inside(root, path):
    full = os.path.join(root, path.lstrip("/"))
    real = os.path.realpath(full)
    if not (real == os.path.realpath(root) or real.startswith(os.path.realpath(root) + "/")):
        fail(f"{path} resolves outside the root")
    return full


def copy(srcroot, root, dst, chown, chmod, *srcs):
    uid, gid = ids(root, chown)
    mode = int(chmod, 8) if chmod else None
    paths = []
    for s in srcs:
        found = sorted(glob.glob(os.path.join(srcroot, s.lstrip("/"))))
        if not found:
            fail(f"COPY {s}: not found in the context (or excluded by the .dockerignore)")
        paths += found
    to_dir = dst.endswith("/") or len(paths) > 1 or len(srcs) > 1
    target = inside(root, dst)
    if len(paths) > 1 and not dst.endswith("/"):
        fail(f"COPY with several sources needs a destination ending in /: {dst}")
    made = []

    def own(p):
        os.lchown(p, uid, gid)
        if mode is not None and not os.path.islink(p):
            os.chmod(p, mode)
        made.append(p)

    def mkdirs(d):
        if not os.path.isdir(d):
            mkdirs(os.path.dirname(d))
            os.mkdir(d, 0o755)
            os.lchown(d, uid, gid)

    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            mkdirs(target.rstrip("/"))
            for r, ds, fs in os.walk(p):
                out = os.path.join(target, os.path.relpath(r, p))
                if not os.path.isdir(out):
                    os.mkdir(out)
                    shutil.copystat(r, out)
                own(out)
                for d in [d for d in ds if os.path.islink(os.path.join(r, d))]:
                    ds.remove(d)
                    fs.append(d)
                for f in fs:
                    o = os.path.join(out, f)
                    shutil.copy2(os.path.join(r, f), o, follow_symlinks=False)
                    own(o)
        else:
            if to_dir or os.path.isdir(target):
                mkdirs(target.rstrip("/"))
                out = os.path.join(target, os.path.basename(p))
            else:
                mkdirs(os.path.dirname(target))
                out = target
            shutil.copy2(p, out, follow_symlinks=False)
            own(out)
    print(f"{len(made)} paths into {dst}")


# ---- apt sources on this machine for SUITE and its -updates/-security, as one-line entries.
def mirrors(suite):
    entries = []
    def add(types, uris, suites, comps):
        if "deb" not in types or "main" not in comps:
            return
        for u in uris:
            for s in suites:
                if s == suite or s.startswith(suite + "-"):
                    e = f"deb {u} {s} main"
                    if e not in entries:
                        entries.append(e)
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for f in files:
        if not os.path.exists(f):
            continue
        for line in open(f):
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 4:
                add([line[0]], [line[1]], [line[2]], line[3:])
    for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", open(f).read()):
            fields, key = {}, None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, val = line.partition(":")
                key = key.strip().lower()
                fields[key] = val.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            add(fields.get("types", "").split(), fields.get("uris", "").split(),
                fields.get("suites", "").split(), fields.get("components", "").split())
    if not any(e.split()[2] == suite for e in entries):
        fail(f"apt on this machine has no enabled '{suite} main' source to copy")
    print("\n".join(entries))


def redis_url(config):
    text = open(config).read()
    try:
        import yaml
        return ((yaml.safe_load(text) or {}).get("redis") or {}).get("url", "")
    except ImportError:
        m = re.search(r"^redis:\s*\n(?:[ \t]+.*\n|\s*\n)*?[ \t]+url:\s*[\"']?([^\"'\s]+)", text, re.M)
        return m.group(1) if m else ""


def main():
    cmd, *args = sys.argv[1:]
    if cmd == "plan":
        plan(*args)
    elif cmd == "context":
        context(*args)
    elif cmd == "copy":
        copy(*args)
    elif cmd == "mirrors":
        mirrors(*args)
    elif cmd == "redis-host":
        url = redis_url(args[0])
        u = urlparse(url)
        print(url, u.hostname or "", u.port or 6379)
    elif cmd == "freeport":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    else:
        fail(f"unknown command {cmd}")


main()
PY

# ------------------------------------------------------------------------------ parse the plan
python3 "$HELPER" plan "$DOCKERFILE" >"$WORK/plan" || die "cannot emulate $DOCKERFILE"
mapfile -t PLAN <"$WORK/plan"
BASE_IMAGE=""
for rec in "${PLAN[@]}"; do
  eval "set -- $rec"
  if [[ $1 == FROM ]]; then
    image="$2"
    # FROM <earlier stage> is fine; every other base must be the one emulated Debian image.
    if grep -qx "FROM [^ ]* $(printf '%q' "$image")" <<<"$(printf '%s\n' "${PLAN[@]}")"; then continue; fi
    [[ $image =~ ^(docker\.io/)?(library/)?debian:([a-z]+)(-slim)?$ ]] ||
      die "only debian:<suite>[-slim] bases are emulated, not $image"
    [[ -z $BASE_IMAGE || $BASE_IMAGE == "$image" ]] || die "two different base images: $BASE_IMAGE, $image"
    BASE_IMAGE="$image"
    SUITE="${BASH_REMATCH[3]}"
    SLIM="${BASH_REMATCH[4]:+1}"
  fi
done
[[ -n $BASE_IMAGE ]] || die "no FROM debian:... in $DOCKERFILE"
say "verifying $DOCKERFILE (base $BASE_IMAGE; context $CONTEXT; work dir $WORK)"

# ------------------------------------------------------------------------------------ base root
bootstrap_tool() {
  if command -v mmdebstrap >/dev/null; then echo mmdebstrap; return; fi
  if command -v debootstrap >/dev/null; then echo debootstrap; return; fi
  {
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mmdebstrap
  } >"$LOGS/install-mmdebstrap.log" 2>&1 || { show_log "$LOGS/install-mmdebstrap.log" 20 >&2; return 1; }
  echo mmdebstrap
}

# The configuration debuerreotype (which makes the official debian images) adds to every image
# (debuerreotype-minimizing-config): above all, apt deletes downloaded .debs after each install,
# so an `apt-get install` layer does not carry them.
docker_minimize() {
  local r="$1" clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
  printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod 0755 "$r/usr/sbin/policy-rc.d" &&
    echo force-unsafe-io >"$r/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" &&
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$r/etc/apt/apt.conf.d/docker-autoremove-suggests" &&
    printf 'DPkg::Post-Invoke { %s };\nAPT::Update::Post-Invoke { %s };\nDir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' \
      "$clean" "$clean" >"$r/etc/apt/apt.conf.d/docker-clean" &&
    echo 'Acquire::GzipIndexes "true";' >"$r/etc/apt/apt.conf.d/docker-gzip-indexes" &&
    echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
}

make_base() {
  if [[ -f $WORK/base.complete ]]; then
    say "reusing $WORK/base from an earlier KEEP=1 run"
    return 0
  fi
  rm -rf --one-file-system "$WORK/base"
  local tool mirrors
  tool="$(bootstrap_tool)" || return 1
  python3 "$HELPER" mirrors "$SUITE" >"$WORK/mirrors" || return 1
  mapfile -t mirrors <"$WORK/mirrors"
  say "$tool --variant=minbase $SUITE from this machine's apt sources:"
  printf '      %s\n' "${mirrors[@]}"
  # What debian:*-slim drops (debuerreotype's slimify list), kept in the root's dpkg config as
  # the image keeps it, so later apt-get installs drop the same.
  local excludes=()
  if [[ -n $SLIM ]]; then
    excludes=('path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
      'path-exclude=/usr/share/groff/*' 'path-exclude=/usr/share/info/*'
      'path-exclude=/usr/share/linda/*' 'path-exclude=/usr/share/lintian/overrides/*'
      'path-exclude=/usr/share/locale/*' 'path-exclude=/usr/share/man/*'
      'path-include=/usr/share/locale/all_languages' 'path-include=/usr/share/locale/currency/*'
      'path-include=/usr/share/locale/l10n/*' 'path-include=/usr/share/locale/languages'
      'path-include=/usr/share/locale/locale.alias')
  fi
  if [[ $tool == mmdebstrap ]]; then
    local opts=(--mode=root --variant=minbase --format=directory)
    # Merged /usr via usr-is-merged, as debootstrap (and so the docker image) does; without the
    # hook apt satisfies init-system-helpers with usrmerge, which drags in perl.
    local hook
    for hook in maybe-merged-usr merged-usr; do
      if [[ -d /usr/share/mmdebstrap/hooks/$hook ]]; then
        opts+=(--hook-dir="/usr/share/mmdebstrap/hooks/$hook")
        break
      fi
    done
    local e
    for e in "${excludes[@]}"; do opts+=(--dpkgopt="$e"); done
    mmdebstrap "${opts[@]}" "$SUITE" "$WORK/base" "${mirrors[@]}" \
      >"$LOGS/bootstrap.log" 2>&1 || { show_log "$LOGS/bootstrap.log" 20; return 1; }
  else
    debootstrap --variant=minbase "$SUITE" "$WORK/base" "$(awk 'NR == 1 { print $2 }' "$WORK/mirrors")" \
      >"$LOGS/bootstrap.log" 2>&1 || { show_log "$LOGS/bootstrap.log" 20; return 1; }
    cp "$WORK/mirrors" "$WORK/base/etc/apt/sources.list"
    if [[ -n $SLIM ]]; then printf '%s\n' "${excludes[@]}" >"$WORK/base/etc/dpkg/dpkg.cfg.d/slim"; fi
    chroot "$WORK/base" apt-get clean
    rm -rf "$WORK/base/var/lib/apt/lists/"*
  fi
  docker_minimize "$WORK/base" || return 1
  touch "$WORK/base.complete"
}
step "base root: $BASE_IMAGE equivalent" make_base || exit 1
BASE_SIZE=$(du -sxm "$WORK/base" | cut -f1)

# ------------------------------------------------------------------------------- build context
IGNORE="$DOCKERFILE.dockerignore"
[[ -f $IGNORE ]] || IGNORE="$CONTEXT/.dockerignore"
make_context() {
  say "context: $CONTEXT filtered by ${IGNORE#"$CONTEXT"/}"
  python3 "$HELPER" context "$CONTEXT" "$IGNORE" "$WORK/context" | sed 's/^/      /'
  [[ ${PIPESTATUS[0]} -eq 0 ]]
}
step "build context (as docker build would send it)" make_context || exit 1

# ---------------------------------------------------------------------------------- the stages
declare -A STAGE_ROOT=()
ROOT=""
STAGE=""
NSTAGES=0
STEPNO=0

# Docker gives every container a /dev of its own: a tmpfs with a few device nodes. Here each node
# is a bind mount of the host's, so nothing in the root can remove the host's.
mount_root() {
  local r="$1" n
  mount -t proc proc "$r/proc" && MOUNTS+=("$r/proc") || return 1
  mount -t tmpfs -o mode=755,nosuid tmpfs "$r/dev" && MOUNTS+=("$r/dev") || return 1
  for n in null zero full random urandom tty; do
    touch "$r/dev/$n" && mount --bind "/dev/$n" "$r/dev/$n" && MOUNTS+=("$r/dev/$n") || return 1
  done
  mkdir -p "$r/dev/pts" "$r/dev/shm"
  ln -s /proc/self/fd "$r/dev/fd"
  ln -s /proc/self/fd/0 "$r/dev/stdin"
  ln -s /proc/self/fd/1 "$r/dev/stdout"
  ln -s /proc/self/fd/2 "$r/dev/stderr"
}

# What docker provides in every container: resolv.conf from the host, its own hosts and hostname.
container_files() {
  local r="$1"
  rm -f "$r/etc/resolv.conf" "$r/etc/hosts"
  cp -L /etc/resolv.conf "$r/etc/resolv.conf"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
  echo "$HOSTID" >"$r/etc/hostname"
}

new_stage() {
  local image="$1" name="$2" from
  umount_all
  STAGE="$name"
  ROOT="$WORK/stages/$NSTAGES-$name"
  from="$WORK/base"
  [[ -n ${STAGE_ROOT[$image]:-} ]] && from="${STAGE_ROOT[$image]}"
  cp -a "$from" "$ROOT" || return 1
  STAGE_ROOT[$name]="$ROOT"
  STAGE_ROOT[$NSTAGES]="$ROOT"
  NSTAGES=$((NSTAGES + 1))
  container_files "$ROOT" && mount_root "$ROOT"
}

# userspec ROOT USER: docker's USER (name or id, optional :group) as uid:gid for chroot.
userspec() {
  local r="$1" u="${2%%:*}" g="" uid gid
  [[ $2 == *:* ]] && g="${2#*:}"
  if [[ $u =~ ^[0-9]+$ ]]; then uid="$u"; else uid="$(awk -F: -v n="$u" '$1 == n { print $3 }' "$r/etc/passwd")"; fi
  [[ -n $uid ]] || { echo "no user $u in the root" >&2; return 1; }
  if [[ -z $g ]]; then
    gid="$(awk -F: -v n="$uid" '$3 == n { print $4 }' "$r/etc/passwd")"
  elif [[ $g =~ ^[0-9]+$ ]]; then gid="$g"
  else gid="$(awk -F: -v n="$g" '$1 == n { print $3 }' "$r/etc/group")"; fi
  echo "$uid:${gid:-0}"
}

home_of() {
  local h
  h="$(awk -F: -v n="${2%%:*}" '$3 == n { print $6 }' "$1/etc/passwd")"
  echo "${h:-/}"
}

STAGE_ENV=()
# in_root ROOT USER WORKDIR CMD...: CMD in the root as USER, in WORKDIR, with the environment a
# docker container gets (PATH, HOSTNAME, HOME and the image's ENV only).
in_root() {
  local r="$1" spec home
  spec="$(userspec "$r" "$2")" || return 1
  home="$(home_of "$r" "$spec")"
  local wd="$3"
  shift 3
  chroot --userspec="$spec" "$r" /usr/bin/env -i -C "$wd" PATH="$DEFAULT_PATH" \
    HOSTNAME="$HOSTID" HOME="$home" "${STAGE_ENV[@]}" "$@"
}

run_step() {
  local log="$1"
  shift
  in_root "$ROOT" "$@" </dev/null >"$log" 2>&1 || { show_log "$log" 30; return 1; }
  show_log "$log" 3
}

copy_step() {
  local from="$1" chown="$2" chmod="$3" dst="$4" srcroot="$WORK/context"
  shift 4
  if [[ -n $from ]]; then
    srcroot="${STAGE_ROOT[$from]:-}"
    [[ -n $srcroot ]] || { echo "no stage $from" >&2; return 1; }
  fi
  python3 "$HELPER" copy "$srcroot" "$ROOT" "$dst" "$chown" "$chmod" "$@" | sed 's/^/      /'
  [[ ${PIPESTATUS[0]} -eq 0 ]]
}

F_USER=root F_WORKDIR=/ F_ENTRY=() F_CMD=() F_HC=() F_STOP=SIGTERM F_EXPOSE=""
for rec in "${PLAN[@]}"; do
  eval "set -- $rec"
  kw="$1"
  shift
  case "$kw" in
    FROM)
      step "FROM $1 AS $2" new_stage "$1" "$2" || exit 1
      STAGE_ENV=() F_USER=root F_WORKDIR=/ F_ENTRY=() F_CMD=(bash) F_HC=() F_STOP=SIGTERM F_EXPOSE=""
      ;;
    RUN)
      STEPNO=$((STEPNO + 1))
      line="$1" user="$2" wd="$3"
      shift 3
      label="${*: -1}"
      label="$(tr -s ' ' <<<"$label")"
      ((${#label} > 72)) && label="${label:0:69}..."
      step "$STAGE: RUN (line $line) $label" run_step "$LOGS/$STEPNO-run-$STAGE.log" "$user" "$wd" "$@" || exit 1
      ;;
    COPY)
      line="$1"
      shift
      step "$STAGE: COPY (line $line) ${*:5} -> $4${1:+ (from $1)}" copy_step "$@" || exit 1
      ;;
    WORKDIR) mkdir -p "$ROOT$1"; F_WORKDIR="$1" ;;
    USER) F_USER="$1" ;;
    ENV) STAGE_ENV+=("$1=$2") ;;
    ENTRYPOINT) F_ENTRY=("$@"); F_CMD=() ;;
    CMD) F_CMD=("$@") ;;
    HEALTHCHECK) F_HC=("$@") ;;
    STOPSIGNAL) F_STOP="$1" ;;
    EXPOSE) F_EXPOSE="$*" ;;
  esac
done
umount_all
RT="$ROOT"
BUILD_SIZES=""
for s in "$WORK"/stages/*; do
  BUILD_SIZES+="$(printf '\n  stage %-22s %6s MB' "${s##*/}" "$(du -sxm "$s" | cut -f1)")"
done
RT_SIZE=$(du -sxm "$RT" | cut -f1)
SIZES="  sizes (du, uncompressed): base ($BASE_IMAGE equivalent) $BASE_SIZE MB$BUILD_SIZES
  image-equivalent size (final stage): $RT_SIZE MB (+$((RT_SIZE - BASE_SIZE)) MB over the base)"

# ------------------------------------------------------------------------- the final image runs
ARGS=("${F_ENTRY[@]}" "${F_CMD[@]}")
((${#ARGS[@]})) || die "the final stage has neither ENTRYPOINT nor CMD"
BIN="${ARGS[0]}"
[[ $BIN == /* ]] || BIN="$(PATH=$DEFAULT_PATH; cd "$RT" && for d in ${PATH//:/ }; do [[ -x .$d/$BIN ]] && echo "$d/$BIN" && break; done)"

mount_root "$RT" || die "cannot mount /proc and /dev in $RT"

check_ldd() {
  local log="$LOGS/ldd.log"
  in_root "$RT" root / ldd "$BIN" >"$log" 2>&1 || { show_log "$log" 30; return 1; }
  sed 's/^/      /' "$log"
  ! grep -q 'not found' "$log"
}
step "final: ldd $BIN finds every library" check_ldd || true

# The shipped config is whatever --config/-c names in ENTRYPOINT + CMD.
CONFIG=""
for ((i = 0; i < ${#ARGS[@]} - 1; i++)); do
  [[ ${ARGS[i]} == --config || ${ARGS[i]} == -c ]] && CONFIG="${ARGS[i + 1]}"
done
RUN_ENV=()
REDIS_PORT=""
read -r REDIS_URL REDIS_HOST _ < <(python3 "$HELPER" redis-host "$RT$CONFIG" 2>/dev/null || echo "")
if [[ -n $REDIS_HOST ]]; then
  if in_root "$RT" root / getent hosts "$REDIS_HOST" >/dev/null 2>&1; then
    say "the config's Redis host $REDIS_HOST resolves here: keeping $REDIS_URL (host network)"
    NETNS=0
  else
    command -v redis-server >/dev/null || die "need redis-server on this machine (apt-get install redis-server)"
    REDIS_PORT=pending
  fi
fi

NS=()
if [[ $NETNS == 1 ]]; then
  setup_netns() {
    NS_FILE="$WORK/netns"
    touch "$NS_FILE" && unshare --net="$NS_FILE" true || { NS_FILE=""; return 1; }
    nsenter --net="$NS_FILE" ip link set lo up || { echo "needs ip (iproute2), or run with NETNS=0"; return 1; }
  }
  step "final: private network namespace (a container's own loopback)" setup_netns || exit 1
  NS=(nsenter --net="$NS_FILE")
fi

start_redis() {
  REDIS_PORT="$("${NS[@]}" python3 "$HELPER" freeport)" || return 1
  "${NS[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$WORK" --logfile "$LOGS/redis.log" </dev/null &
  BG_PIDS+=("$!")
  local i
  for ((i = 0; i < 50; i++)); do
    [[ "$("${NS[@]}" redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && return 0
    sleep 0.2
  done
  return 1
}
if [[ $REDIS_PORT == pending ]]; then
  step "final: redis-server on 127.0.0.1 (config's host \"$REDIS_HOST\" does not resolve here)" start_redis || exit 1
  RUN_ENV+=(SIDECAR_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0")
  say "overriding the config's $REDIS_URL with ${RUN_ENV[-1]}, as docker run -e would"
fi

SIDECAR_PID=""
start_container() {
  say "as USER $F_USER${F_EXPOSE:+, EXPOSE $F_EXPOSE}: ${ARGS[*]} ${RUN_ENV[*]}"
  "${NS[@]}" chroot --userspec="$(userspec "$RT" "$F_USER")" "$RT" /usr/bin/env -i -C "$F_WORKDIR" \
    PATH="$DEFAULT_PATH" HOSTNAME="$HOSTID" HOME="$(home_of "$RT" "$(userspec "$RT" "$F_USER")")" \
    "${STAGE_ENV[@]}" "${RUN_ENV[@]}" "${ARGS[@]}" </dev/null >"$LOGS/container.log" 2>&1 &
  SIDECAR_PID=$!
  BG_PIDS+=("$SIDECAR_PID")
  sleep 0.3
  kill -0 "$SIDECAR_PID" 2>/dev/null || { show_log "$LOGS/container.log" 20; return 1; }
}
step "final: start ENTRYPOINT + CMD as USER $F_USER" start_container || exit 1

# probe PATH: the image's HEALTHCHECK command (with PATH in place of its /health argument), run
# in the container as its USER, bounded by the HEALTHCHECK's timeout.
HC_ARGS=("${F_HC[@]:4}")
HC_TIMEOUT="${F_HC[1]:-30}"
probe() {
  local want="$1" args=() a replaced=0
  for a in "${HC_ARGS[@]}"; do
    if [[ $a == /health ]]; then a="$want"; replaced=1; fi
    args+=("$a")
  done
  [[ $want == /health || $replaced == 1 ]] || { echo "HEALTHCHECK names no /health to swap for $want"; return 2; }
  timeout "${HC_TIMEOUT%.*}" "${NS[@]}" chroot --userspec="$(userspec "$RT" "$F_USER")" "$RT" \
    /usr/bin/env -i -C / PATH="$DEFAULT_PATH" HOSTNAME="$HOSTID" "${STAGE_ENV[@]}" "${args[@]}" </dev/null
}

# wait_until PATH SECONDS: poll every 0.5 s until probe PATH succeeds.
wait_until() {
  local path="$1" limit="$2" t0=$EPOCHREALTIME out rc
  while :; do
    kill -0 "$SIDECAR_PID" 2>/dev/null || { echo "the container exited:"; show_log "$LOGS/container.log" 20; return 1; }
    out="$(probe "$path" 2>&1)" && rc=0 || rc=$?
    if [[ $rc -eq 0 ]]; then
      say "$path: 200 after $(elapsed "$t0")s"
      return 0
    fi
    [[ $rc -eq 2 ]] && { echo "$out"; return 1; }
    if awk -v a="$t0" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      echo "no 200 within ${limit}s; last: ${out:-no answer}"
      show_log "$LOGS/container.log" 10
      return 1
    fi
    sleep 0.5
  done
}

if ((${#F_HC[@]} >= 5)); then
  # Docker calls the container unhealthy after start-period + retries * interval.
  HC_LIMIT=$(awk -v i="${F_HC[0]}" -v s="${F_HC[2]}" -v r="${F_HC[3]}" 'BEGIN { printf "%d", s + r * i }')
  step "final: HEALTHCHECK ${HC_ARGS[*]} healthy (limit ${HC_LIMIT}s)" wait_until /health "$HC_LIMIT" || true
  step "final: /ready answers 200 (same script, /ready)" wait_until /ready 15 || true
else
  RESULTS+=("FAIL       -  final: the final stage has no HEALTHCHECK CMD to probe with")
fi

stop_container() {
  local t0=$EPOCHREALTIME rc=0 limit=30
  kill -s "${F_STOP#SIG}" "$SIDECAR_PID" || return 1
  while kill -0 "$SIDECAR_PID" 2>/dev/null; do
    if awk -v a="$t0" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      echo "still running ${limit}s after $F_STOP"
      kill -KILL "$SIDECAR_PID"
      break
    fi
    sleep 0.2
  done
  wait "$SIDECAR_PID" || rc=$?
  say "exited with status $rc after $(elapsed "$t0")s; last log lines:"
  show_log "$LOGS/container.log" 4
  return "$rc"
}
step "final: STOPSIGNAL $F_STOP -> exit status 0" stop_container || true

FINISHED=1

# Cluster "gamma" of scripts/slurm-lab: Slurm 24.11 from Debian 13 (trixie) in a chroot
# (sourced by scripts/slurm-lab; recipe and pitfalls: the team's notes, "slurm-24.md").
#
# The chroot holds packages only, built once with debootstrap (~35 s) and reused:
#   ${SLURM_LAB_GAMMA_ROOT:-/var/cache/bridgehead/trixie}
# Everything gamma writes lives in <lab>/gamma, bind-mounted at the same path inside the chroot,
# so its configs, logs, job files and wake sockets have ONE path on both sides:
#   etc/slurm.conf, etc/slurmdbd.conf   configs (SLURM_CONF)
#   bin/sbatch, bin/squeue, ...          host wrappers running the 24.11 CLI in the chroot
#                                        (22.05 clients cannot talk to a 24.11 controller)
#   jobs/                                a job root for job files (mode 1777)
#   wake/                                agents' wake sockets
#   hook, hook.cmd, hookrelay            PrologSlurmctld/EpilogSlurmctld, see gamma_hook
#   token                                a 1-day JWT for root (slurmrestd)
#   munge/, state/, spool/, log/, run/   daemons' files, pid files
#
#   gamma: slurmctld 6917, slurmd 6918 (node gamma1, 8 CPUs), slurmdbd 6919 (host MariaDB,
#          database slurm2411_acct_db, user slurm2411), slurmrestd 127.0.0.1:6920
#          (v0.0.40, v0.0.41, v0.0.42; JWT), FirstJobId=300000
#
# Daemons run in the chroot as root; `chroot` execs them, so each recorded pid is the daemon's
# own, and it is trusted only while /proc/<pid>/root is the chroot.

GAMMA=$LAB/gamma
GAMMA_ROOT=${SLURM_LAB_GAMMA_ROOT:-/var/cache/bridgehead/trixie}
GAMMA_ROOT=${GAMMA_ROOT%/}
GAMMA_CTLD_PORT=6917
GAMMA_SLURMD_PORT=6918
GAMMA_DBD_PORT=6919
GAMMA_REST_PORT=6920
GAMMA_FIRST_JOB_ID=300000
GAMMA_CPUS=8
GAMMA_MEMORY=8000
GAMMA_DB=slurm2411_acct_db
GAMMA_DB_USER=slurm2411
GAMMA_DB_PASS=slurm2411pw
GAMMA_MIRROR=${SLURM_LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-minimal: jobs and tests run python3 scripts in the chroot as on any cluster node.
GAMMA_PACKAGES=(slurm-wlm slurmctld slurmd slurmrestd slurmdbd slurm-client munge
                slurm-wlm-jwt-plugin slurm-wlm-mysql-plugin procps python3-minimal)
GAMMA_DAEMONS=(gamma-hookrelay gamma-munged gamma-slurmdbd gamma-slurmctld gamma-slurmd
               gamma-slurmrestd)
GAMMA_TOOLS=(sbatch squeue sacct scancel scontrol sinfo sacctmgr srun salloc sprio sshare)

# -- the chroot ------------------------------------------------------------------------------

gamma_ready() { [ -f "$GAMMA_ROOT/.bridgehead-ready" ] && [ -x "$GAMMA_ROOT/usr/sbin/slurmctld" ]; }

# Build the chroot once: debootstrap into a scratch dir next to it, install the packages, then
# rename it into place, so a half-built chroot (an interrupted run) is never used.
gamma_build() {
  gamma_ready && return 0
  local tmp=$GAMMA_ROOT.build
  mkdir -p "$(dirname "$GAMMA_ROOT")"
  gamma_unmount "$tmp"
  rm -rf --one-file-system "$tmp"
  say "building the Debian 13 chroot for gamma in $GAMMA_ROOT (once; about 35 s)"
  debootstrap --variant=minbase trixie "$tmp" "$GAMMA_MIRROR" >"$LOGS/gamma-build.log" 2>&1 ||
    { say "debootstrap failed"; tail -n 20 "$LOGS/gamma-build.log" >&2; return 1; }
  # No init system in the chroot: package scripts must not start daemons.
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod 755 "$tmp/usr/sbin/policy-rc.d"
  # minbase has no /etc/hosts, and without it "localhost" does not resolve.
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$tmp/etc/hosts"
  mount -t proc proc "$tmp/proc" && mount --bind /dev "$tmp/dev" || return 1
  local rc=0
  { chroot "$tmp" apt-get update -qq &&
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${GAMMA_PACKAGES[@]}"; } >>"$LOGS/gamma-build.log" 2>&1 || rc=$?
  chroot "$tmp" apt-get clean >/dev/null 2>&1 || true
  gamma_unmount "$tmp"
  if [ $rc != 0 ]; then
    say "installing Slurm 24.11 in the chroot failed"; tail -n 20 "$LOGS/gamma-build.log" >&2
    return 1
  fi
  chroot "$tmp" dpkg-query -W -f='${Version}\n' slurmctld >"$tmp/.bridgehead-ready"
  mv "$tmp" "$GAMMA_ROOT"
  say "gamma's chroot is ready: Slurm $(gamma_version)"
}

# What gamma needs on the host: debootstrap (once), curl (REST checks), the MariaDB client.
gamma_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || gamma_ready || missing+=(debootstrap)
  command -v curl >/dev/null || missing+=(curl)
  command -v mariadb >/dev/null || missing+=(mariadb-client)
  [ ${#missing[@]} -gt 0 ] || return 0
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
    >/dev/null
}

gamma_version() { sed 's/-.*//' "$GAMMA_ROOT/.bridgehead-ready" 2>/dev/null; }

# Unmount everything under chroot $1 (deepest first).
gamma_unmount() {
  local root=$1 m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "cannot unmount $m"
  done < <(awk -v r="$root/" 'index($2 "/", r) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

gamma_mount() {
  mkdir -p "$GAMMA_ROOT$GAMMA"
  mountpoint -q "$GAMMA_ROOT/proc" || mount -t proc proc "$GAMMA_ROOT/proc" || return 1
  mountpoint -q "$GAMMA_ROOT/dev" || mount --bind /dev "$GAMMA_ROOT/dev" || return 1
  mountpoint -q "$GAMMA_ROOT$GAMMA" || mount --bind "$GAMMA" "$GAMMA_ROOT$GAMMA"
}

# -- processes -------------------------------------------------------------------------------

gamma_pid_ok() { # PID NAME: alive, named right, and (for a daemon) inside the chroot
  local pid=$1 name=$2
  alive "$pid" "$(comm_of "$name")" || return 1
  [ "$name" = gamma-hookrelay ] || [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$GAMMA_ROOT" ]
}
gamma_running() { gamma_pid_ok "$(pid_of "$1")" "$1"; }

# Every live process inside the chroot (daemons, slurmstepd, slurmscriptd, jobs).
gamma_processes() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$GAMMA_ROOT" ] && alive "${p#/proc/}" &&
      echo "${p#/proc/}"
  done
}

# A 24.11 client command (through gamma's wrappers), bounded in time.
gon() { local tool=$1; shift; timeout 15 "$GAMMA/bin/$tool" "$@"; }

# launch NAME CMD...: a daemon in the chroot (start_daemon: own session, pid file, .out log).
gamma_launch() {
  local name=$1; shift
  start_daemon "$name" "$GAMMA/log/${name#gamma-}.out" "$GAMMA" chroot "$GAMMA_ROOT" "$@"
}

# -- files -----------------------------------------------------------------------------------

gamma_conf() {
  cat <<EOF
# Cluster gamma of scripts/slurm-lab: Slurm 24.11 in the chroot $GAMMA_ROOT (generated; edits
# are overwritten by \`up\`). Paths under $GAMMA are the same inside the chroot and out.
ClusterName=gamma
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$GAMMA_CTLD_PORT
SlurmdPort=$GAMMA_SLURMD_PORT
FirstJobId=$GAMMA_FIRST_JOB_ID
StateSaveLocation=$GAMMA/state
SlurmdSpoolDir=$GAMMA/spool
SlurmctldPidFile=$GAMMA/run/slurmctld.pid
SlurmdPidFile=$GAMMA/run/slurmd.pid
SlurmctldLogFile=$GAMMA/log/slurmctld.log
SlurmdLogFile=$GAMMA/log/slurmd.log
PrologSlurmctld=$GAMMA/hook
EpilogSlurmctld=$GAMMA/hook
EOF
  # The settings alpha and beta share, but with the chroot's own munge socket (the default
  # one, so no AuthInfo) and gamma's JWT key and slurmdbd.
  common_conf | sed -e '/^AuthInfo=/d' -e '/^AccountingStoragePass=/d' \
    -e "s|^AuthAltParameters=.*|AuthAltParameters=jwt_key=$GAMMA/jwt.key|" \
    -e "s|^AccountingStoragePort=.*|AccountingStoragePort=$GAMMA_DBD_PORT|"
  cat <<EOF
# No cgroup file system in these sandboxes: slurmd 24.11 exits without this (cgroup.conf).
SlurmdParameters=config_overrides
NodeName=gamma1 NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$GAMMA_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$GAMMA_CPUS ThreadsPerCore=1 RealMemory=$GAMMA_MEMORY State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

gamma_dbd_conf() {
  cat <<EOF
# gamma's slurmdbd (generated by scripts/slurm-lab). Must be mode 600.
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$GAMMA/jwt.key
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$GAMMA_DBD_PORT
SlurmUser=root
LogFile=$GAMMA/log/slurmdbd.log
PidFile=$GAMMA/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=$GAMMA_DB_USER
StoragePass=$GAMMA_DB_PASS
StorageLoc=$GAMMA_DB
EOF
}

# PrologSlurmctld/EpilogSlurmctld of gamma. slurmctld runs it INSIDE the chroot, where the
# host's Python and Bridgehead are not: it hands the event (its SLURM_* environment, one file
# in events/) to the host's hook relay through the FIFO hook.fifo, and the relay runs hook.cmd
# on the host, as alpha's hook does. Always exits 0 (a failing prolog requeues the job forever);
# with no relay listening it gives up after 2 s.
gamma_hook() {
  cat <<EOF
#!/bin/sh
# PrologSlurmctld/EpilogSlurmctld of cluster gamma (generated by scripts/slurm-lab): runs in
# the chroot, passes the job's SLURM_* environment to the host's hookrelay, exits 0.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
fifo=$GAMMA/hook.fifo
[ -p "\$fifo" ] || exit 0
ev=\$(mktemp "$GAMMA/events/ev.XXXXXXXX") || exit 0
env -0 >"\$ev"
timeout 2 sh -c 'printf "%s\n" "\$1" >"\$2"' sh "\${ev##*/}" "\$fifo" || rm -f "\$ev"
exit 0
EOF
}

# The host side: one line (an event file's name) per event from the FIFO; runs hook.cmd with
# that event's SLURM_* variables (passed as env arguments, never through a shell), for at
# most 5 s, without waiting for it (alpha's slurmctld also runs its hooks side by side).
gamma_relay() {
  cat <<EOF
#!/bin/bash
# gamma's hook relay (generated by scripts/slurm-lab): see $GAMMA/hook.
spool=$GAMMA/events
cmd=$GAMMA/hook.cmd
exec 3<>"$GAMMA/hook.fifo"
while IFS= read -r name <&3; do
  [[ \$name =~ ^ev\.[A-Za-z0-9]+\$ ]] && [ -f "\$spool/\$name" ] || continue
  mapfile -d '' -t vars <"\$spool/\$name"
  rm -f "\$spool/\$name"
  env=()
  for v in "\${vars[@]}"; do [[ \$v =~ ^SLURM_[A-Za-z0-9_]*= ]] && env+=("\$v"); done
  if [ -x "\$cmd" ]; then
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "\${env[@]}" \\
      timeout 5 "\$cmd" </dev/null >/dev/null 2>&1 &
  fi
done
EOF
}

# bin/<tool>: the 24.11 client $2 (its path in the chroot) in the chroot, in the caller's
# working dir (meaningful under $GAMMA, which has the same path inside), with gamma's slurm.conf
# unless SLURM_CONF is set. The tool is named by its path: PATH may hold bin/ itself, which the
# chroot also sees. The caller's arguments travel as "$@" to exec: no shell ever parses them.
gamma_wrapper() {
  cat <<EOF
#!/bin/sh
# Slurm 24.11's $1 on cluster gamma (generated by scripts/slurm-lab): runs it inside the
# chroot $GAMMA_ROOT (needs root), in the caller's working dir when the chroot has it.
: "\${SLURM_CONF:=$(printf %q "$GAMMA/etc/slurm.conf")}"
export SLURM_CONF
exec $(command -v chroot) $(printf %q "$GAMMA_ROOT") /bin/sh -c 'cd "\$1" 2>/dev/null || cd /; shift; exec "\$@"' \\
  sh "\$PWD" $(printf %q "$2") "\$@"
EOF
}

gamma_json() {
  python3 - "$GAMMA" "$GAMMA_ROOT" "$(gamma_version)" "$GAMMA_REST_PORT" "$GAMMA_CPUS" \
    "$GAMMA_FIRST_JOB_ID" <<'EOF'
import json, sys
g, root, version, port, cpus, first = sys.argv[1:]
json.dump({"slurm_conf": f"{g}/etc/slurm.conf", "rest_url": f"http://127.0.0.1:{port}",
           "wake_dir": f"{g}/wake", "hook_cmd": f"{g}/hook.cmd", "hook_dir": f"{g}/hook.d",
           "first_job_id": int(first),
           "cpus": int(cpus), "node": "gamma1", "partition": "debug",
           "slurm_version": version, "bin_dir": f"{g}/bin", "job_root": f"{g}/jobs",
           "rest_token_file": f"{g}/token",
           "rest_versions": ["v0.0.40", "v0.0.41", "v0.0.42"], "chroot": root},
          sys.stdout)
EOF
}

gamma_write_files() {
  local tool path text
  install -d -m 755 "$GAMMA" "$GAMMA/etc" "$GAMMA/bin" "$GAMMA/run" "$GAMMA/log" \
    "$GAMMA/state" "$GAMMA/spool" "$GAMMA/munge"
  install -d -m 700 "$GAMMA/events"
  install -d -m 1777 "$GAMMA/wake" "$GAMMA/jobs"
  [ -p "$GAMMA/hook.fifo" ] || { rm -f "$GAMMA/hook.fifo"; mkfifo -m 600 "$GAMMA/hook.fifo"; }
  text=$(gamma_conf); put "$GAMMA/etc/slurm.conf" 644 "$text"
  put "$GAMMA/etc/cgroup.conf" 644 "CgroupPlugin=disabled"
  text=$(gamma_dbd_conf); put "$GAMMA/etc/slurmdbd.conf" 600 "$text"
  text=$(gamma_hook); put "$GAMMA/hook" 755 "$text"
  text=$(gamma_relay); put "$GAMMA/hookrelay" 755 "$text"
  text=$(hook_cmd_default gamma); put "$GAMMA/hook.cmd" 755 "$text"  # read per call
  mkdir -p "$GAMMA/hook.d"
  for tool in "${GAMMA_TOOLS[@]}"; do
    path=$(chroot "$GAMMA_ROOT" /bin/sh -c 'command -v "$1"' sh "$tool") || continue
    text=$(gamma_wrapper "$tool" "$path"); put "$GAMMA/bin/$tool" 755 "$text"
  done
  if [ ! -s "$GAMMA/jwt.key" ]; then
    (umask 077; dd if=/dev/urandom of="$GAMMA/jwt.key" bs=32 count=1 status=none)
  fi
  chmod 600 "$GAMMA/jwt.key"
  if [ ! -s "$GAMMA/munge/munge.key" ]; then
    dd if=/dev/urandom of="$GAMMA/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 400 "$GAMMA/munge/munge.key"
}

gamma_sum() {
  cat "$GAMMA/etc/slurm.conf" "$GAMMA/etc/slurmdbd.conf" "$GAMMA/hook" "$GAMMA/hookrelay" \
    "$GAMMA_ROOT/.bridgehead-ready" | sha256sum | cut -d' ' -f1
}

# -- checks ----------------------------------------------------------------------------------

gamma_node_state() { gon sinfo -h -N -n gamma1 -o %T 2>/dev/null | head -n 1; }
gamma_node_ok() { [[ $(gamma_node_state) =~ $NODE_OK ]]; }
gamma_munge_ok() { chroot "$GAMMA_ROOT" sh -c 'munge -n | unmunge' >/dev/null; }
gamma_dbd_ok() { gon sacctmgr -n -P list cluster format=cluster >/dev/null; }
gamma_sacct_ok() { gon sacct -n -X -S now >/dev/null; }
gamma_rest_ping() {
  local out
  [ -s "$GAMMA/token" ] || return 1
  out=$(curl -sS --max-time 5 -w '\n%{http_code}' -H "X-SLURM-USER-NAME: root" \
        -H "X-SLURM-USER-TOKEN: $(cat "$GAMMA/token")" \
        "http://127.0.0.1:$GAMMA_REST_PORT/slurm/v0.0.42/ping") || return 1
  [ "${out##*$'\n'}" = 200 ] && grep -q '"pinged": *"UP"' <<<"$out"
}

gamma_healthy() {
  local d
  for d in "${GAMMA_DAEMONS[@]}"; do gamma_running "$d" || return 1; done
  mountpoint -q "$GAMMA_ROOT$GAMMA" && gamma_node_ok && gamma_token && gamma_rest_ping &&
    gamma_sacct_ok
}

# -- start and stop --------------------------------------------------------------------------

gamma_setup_database() {
  local sql="
CREATE DATABASE IF NOT EXISTS $GAMMA_DB;
CREATE USER IF NOT EXISTS '$GAMMA_DB_USER'@'localhost' IDENTIFIED BY '$GAMMA_DB_PASS';
CREATE USER IF NOT EXISTS '$GAMMA_DB_USER'@'127.0.0.1' IDENTIFIED BY '$GAMMA_DB_PASS';
GRANT ALL PRIVILEGES ON $GAMMA_DB.* TO '$GAMMA_DB_USER'@'localhost';
GRANT ALL PRIVILEGES ON $GAMMA_DB.* TO '$GAMMA_DB_USER'@'127.0.0.1';"
  if mariadb "${DB_ARGS[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
    mariadb "${DB_ARGS[@]}" -e "$sql"
  else
    mariadb -uroot -e "$sql"
  fi
}

gamma_start_slurmctld() { gamma_launch gamma-slurmctld env SLURM_CONF="$GAMMA/etc/slurm.conf" \
                            /usr/sbin/slurmctld -D -i; }

# A 1-day JWT for root (tests, the REST backend's token file); renewed by every `up` and
# `status` that finds it older than an hour (an expired token must not look like a dead
# slurmrestd).
gamma_token() {
  local tok
  if [ -s "$GAMMA/token" ] && [ -z "$(find "$GAMMA/token" -mmin +60)" ]; then return 0; fi
  tok=$(gon scontrol token username=root lifespan=86400 | sed -n 's/^SLURM_JWT=//p') &&
    [ -n "$tok" ] || return 1
  (umask 077; printf '%s\n' "$tok" >"$GAMMA/token.new") && mv -f "$GAMMA/token.new" "$GAMMA/token"
}

# Called as `if ! gamma_start`, where errexit is off: every step checks its own failure.
gamma_start() {
  local log=$GAMMA/log
  gamma_mount || { say "cannot mount gamma's file systems in $GAMMA_ROOT"; return 1; }
  start_daemon gamma-hookrelay "$log/hookrelay.out" "$GAMMA" "$GAMMA/hookrelay"
  mkdir -p "$GAMMA_ROOT/run/munge"
  gamma_launch gamma-munged /usr/sbin/munged --foreground --key-file="$GAMMA/munge/munge.key" \
    --pid-file="$GAMMA/munge/munged.pid" --log-file="$log/munged.log" \
    --seed-file="$GAMMA/munge/munged.seed"
  wait_for "gamma munged" 10 gamma-munged "$log/munged.log" gamma_munge_ok || return 1
  gamma_setup_database || { say "could not create gamma's database in MariaDB"; return 1; }
  gamma_launch gamma-slurmdbd env SLURM_CONF="$GAMMA/etc/slurm.conf" /usr/sbin/slurmdbd -D
  wait_for "gamma slurmdbd on port $GAMMA_DBD_PORT" 30 gamma-slurmdbd "$log/slurmdbd.log" \
    gamma_dbd_ok || return 1
  gamma_start_slurmctld
  gamma_launch gamma-slurmd env SLURM_CONF="$GAMMA/etc/slurm.conf" /usr/sbin/slurmd -D -N gamma1
  wait_for "gamma slurmctld to answer" 30 gamma-slurmctld "$log/slurmctld.log" \
    gon scontrol ping || return 1
  # responding, not idle: jobs in the saved state may run again at once
  wait_for "gamma node gamma1 to respond in sinfo" 30 gamma-slurmd "$log/slurmd.log" \
    gamma_node_ok || return 1
  gamma_token || { say "scontrol token failed on gamma"; return 1; }
  # Refuses root (SlurmUser) without disable_user_check; SLURM_JWT=daemon: clients' JWTs.
  gamma_launch gamma-slurmrestd env SLURM_CONF="$GAMMA/etc/slurm.conf" SLURM_JWT=daemon \
    SLURMRESTD_SECURITY=disable_user_check /usr/sbin/slurmrestd -a rest_auth/jwt \
    -s openapi/slurmctld,openapi/slurmdbd -d v0.0.40,v0.0.41,v0.0.42 "127.0.0.1:$GAMMA_REST_PORT"
  wait_for "gamma slurmrestd ping" 20 gamma-slurmrestd "$log/slurmrestd.out" gamma_rest_ping ||
    return 1
  wait_for "gamma sacct" 20 gamma-slurmdbd "$log/slurmdbd.log" gamma_sacct_ok
}

# Cancel gamma's jobs (stopping slurmd does not stop them), stop its daemons by pid, then
# anything left inside the chroot (slurmstepd, slurmscriptd, jobs), then unmount.
gamma_stop() {
  local ids i left
  if gamma_running gamma-slurmctld; then
    ids=$(gon squeue -h -o %A 2>/dev/null | tr '\n' ' ') || true
    if [ -n "${ids// /}" ]; then
      # shellcheck disable=SC2086
      gon scancel $ids 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        [ -n "$(gon squeue -h -o %A 2>/dev/null)" ] || break
        sleep 0.1
      done
    fi
  fi
  for d in gamma-slurmrestd gamma-slurmd gamma-slurmctld gamma-slurmdbd gamma-munged \
           gamma-hookrelay; do
    if gamma_running "$d"; then stop_pids "$(pid_of "$d")"; fi
    rm -f "$RUN/$d.pid"
  done
  mapfile -t left < <(gamma_processes)
  if [ ${#left[@]} -gt 0 ]; then
    say "stopping leftover processes in gamma's chroot: ${left[*]}"
    stop_pids "${left[@]}"
  fi
  gamma_unmount "$GAMMA_ROOT"
  rm -f "$GAMMA/started.sum"
}

# `up` for gamma: build the chroot if needed, (re)write the files, start unless healthy.
gamma_up() {
  gamma_host_tools || return 1
  gamma_build || return 1
  gamma_write_files
  if [ "$(gamma_sum)" = "$(cat "$GAMMA/started.sum" 2>/dev/null)" ] &&
     { gamma_healthy || { sleep 1 && gamma_healthy; }; }; then
    say "gamma already up"
    return 0
  fi
  if [ -n "$(gamma_processes)" ] || ls "$RUN"/gamma-*.pid >/dev/null 2>&1; then
    say "restarting gamma (partly up, unhealthy or reconfigured)"
    gamma_stop
  fi
  if ! gamma_start; then
    say "gamma failed to start; stopping it (logs in $GAMMA/log)"
    gamma_stop
    return 1
  fi
  gamma_sum >"$GAMMA/started.sum"
  say "gamma up: Slurm $(gamma_version), REST http://127.0.0.1:$GAMMA_REST_PORT"
}

# -- commands --------------------------------------------------------------------------------

gamma_status() {
  local d pid ok=0 state
  if ! gamma_ready; then
    printf '%-18s %-8s %s\n' gamma - "no chroot at $GAMMA_ROOT (\`up\` builds it)"
    return 3
  fi
  for d in "${GAMMA_DAEMONS[@]}"; do
    pid=$(pid_of "$d")
    if gamma_pid_ok "$pid" "$d"; then
      printf '%-18s %-8s %s\n' "$d" "$pid" running
    else
      printf '%-18s %-8s %s\n' "$d" "${pid:--}" "stopped$(held_note "$d")"; ok=3
    fi
  done
  state=stopped
  if gamma_running gamma-slurmctld; then state=$(gamma_node_state) || true; state=${state:-unknown}; fi
  printf '%-18s %-8s %s\n' gamma-node gamma1 "$state (Slurm $(gamma_version))"
  [[ $state =~ $NODE_OK ]] || ok=3
  if gamma_running gamma-slurmrestd && gamma_token && gamma_rest_ping; then
    printf '%-18s %-8s %s\n' gamma-rest "$GAMMA_REST_PORT" "ping ok"
  else
    printf '%-18s %-8s %s\n' gamma-rest "$GAMMA_REST_PORT" "no answer"; ok=3
  fi
  if gamma_running gamma-slurmdbd && gamma_sacct_ok 2>/dev/null; then
    printf '%-18s %-8s %s\n' gamma-accounting "$GAMMA_DBD_PORT" "sacct ok"
  else
    printf '%-18s %-8s %s\n' gamma-accounting "$GAMMA_DBD_PORT" "no answer"; ok=3
  fi
  return $ok
}

gamma_stop_ctld() {
  if gamma_running gamma-slurmctld; then stop_pids "$(pid_of gamma-slurmctld)"; fi
  rm -f "$RUN/gamma-slurmctld.pid"
}

gamma_start_ctld() {
  gamma_running gamma-slurmctld || gamma_start_slurmctld
  wait_for "gamma slurmctld to answer" 120 gamma-slurmctld "$GAMMA/log/slurmctld.log" \
    gon scontrol ping || return 1
  wait_for "gamma node gamma1 to respond" 120 gamma-slurmctld "$GAMMA/log/slurmctld.log" \
    gamma_node_ok || return 1
  echo "slurm-lab: gamma slurmctld running"
}

gamma_env() {
  printf 'SLURM_CONF=%q\n' "$GAMMA/etc/slurm.conf"
  printf 'PATH=%q\n' "$GAMMA/bin:$PATH"
  printf 'SLURM_LAB_DIR=%q\n' "$LAB"
  printf 'SLURM_LAB_BIN_DIR=%q\n' "$GAMMA/bin"
  printf 'SLURM_LAB_JOB_ROOT=%q\n' "$GAMMA/jobs"
  printf 'SLURM_LAB_REST_URL=%q\n' "http://127.0.0.1:$GAMMA_REST_PORT"
  printf 'SLURM_LAB_TOKEN_FILE=%q\n' "$GAMMA/token"
  printf 'SLURM_LAB_WAKE_DIR=%q\n' "$GAMMA/wake"
  printf 'SLURM_LAB_JWT_KEY=%q\n' "$GAMMA/jwt.key"
}

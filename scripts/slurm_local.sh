#!/usr/bin/env bash
# =============================================================================
# slurm_local.sh -- a real single-node SLURM cluster on this machine, so that
# gridtune's SLURM launcher (Hydra + submitit) can be run and tested for real.
#
# Usage:
#   scripts/slurm_local.sh up       install (if missing), configure, start; as root
#   scripts/slurm_local.sh down     cancel queued jobs, stop what `up` started; as root
#   scripts/slurm_local.sh status   sinfo/squeue/sacct; exit 0 only if jobs can run
#
# Target: Debian 12 (SLURM 22.05 from apt), run as root, with or without systemd
# and cgroups: daemons are started directly and tracked by their PID files.
#
# The cluster `up` builds (cluster name "gridtune"):
#   node        $(slurmd -C) name, CPUs=SLURM_LOCAL_CPUS (see below),
#               RealMemory = real memory - 512 MB, Gres=gpu:SLURM_LOCAL_GPUS
#   partitions  debug  (default)  -- jobs here can be preempted: they get their
#                                    --signal (e.g. USR2) and are REQUEUED
#               urgent            -- higher priority tier, preempts debug
#   accounting  slurmdbd + MariaDB (unix socket only), so `sacct` works. submitit
#               polls sacct for job states; without it a job that dies without a
#               result (scancel, OOM) makes job.result() wait forever.
#   fake GPUs   char-device copies of /dev/null. `--gpus-per-node=1` schedules and
#               sets CUDA_VISIBLE_DEVICES, but there is no accelerator behind it.
#               They need device files: slurmd 22.05 drops file-less GPUs and the
#               controller then drains the node ("gres/gpu count reported lower").
#
# Properties:
#   * idempotent: packages are installed only when missing (apt-get update only
#     when apt has no candidate or the install fails); config files are written
#     only when their content changes; running daemons are left alone unless
#     their config changed. A second `up` takes well under a second.
#   * `down` stops only daemons that `up` started (recorded with their start
#     time under /run/gridtune-slurm/started/), so it never stops a cluster, a
#     MariaDB or a munged that was running before.
#   * up/down runs take turns through flock on /run/gridtune-slurm/lock.
#   * fast scheduling: a submitted batch job starts within ~1 s, and a requeued
#     job runs again after ~12 s (SLURM's defaults: ~2-3 s and ~141 s).
#
# Environment knobs (all optional):
#   SLURM_LOCAL_CPUS=auto|N    CPUs the node declares. Default auto = max(real, 4):
#                              on a 2-core machine, 4 one-CPU jobs run at once
#                              (gridtune's tests run several 1-CPU sweep jobs in
#                              parallel). N > real cores oversubscribes them
#                              (SlurmdParameters=config_overrides); fine for
#                              short, mostly idle test jobs, not for benchmarks.
#   SLURM_LOCAL_GPUS=N         fake GPUs (default 2; 0 = none)
#   SLURM_LOCAL_MEM_MB=auto|N  RealMemory in MB (default: real memory - 512)
#   SLURM_LOCAL_ACCOUNTING=slurmdbd|none
#                              default slurmdbd; none skips MariaDB/slurmdbd (faster
#                              start, but sacct does not work)
#   SLURM_LOCAL_MAX_ARRAY_SIZE=N
#                              MaxArraySize in slurm.conf (array task ids < N);
#                              unset: SLURM's default (1001). A changed value
#                              restarts slurmctld and slurmd like any config
#                              change; running jobs survive. The next `up`
#                              without it restores the default.
#   SLURM_LOCAL_INSTALL=1|0    0: never call apt-get, fail if packages are missing
#   SLURM_LOCAL_SMOKE=1|0      run `srun hostname` when the node is idle (default 1)
#   SLURM_LOCAL_TIMEOUT=S      seconds to wait for each daemon (default 120)
#   SLURM_LOCAL_LOCK_TIMEOUT=S seconds to wait for a concurrent up/down (default 600)
#
# Files:
#   /etc/slurm/{slurm,gres,slurmdbd}.conf     generated configuration
#   /var/lib/gridtune-slurm/                  controller state, slurmd spool, fake GPUs
#   /var/log/slurm/*.log                      daemon logs (first place to look)
#   /run/gridtune-slurm/                      lock + record of started daemons
#
# Typical timings (2 vCPU VM): bare machine ~20-60 s (mostly apt), installed
# but stopped ~3 s, already up ~0.5 s; down ~3-10 s.
# =============================================================================
set -Eeuo pipefail

readonly CLUSTER=gridtune
readonly PARTITION=debug
readonly URGENT_PARTITION=urgent
readonly ETC=/etc/slurm
readonly STATE=/var/lib/gridtune-slurm
readonly FAKE_GPU_DIR=$STATE/fake-gpus
readonly LOGS=/var/log/slurm
readonly RUN_DIR=/run/gridtune-slurm
readonly STARTED=$RUN_DIR/started
readonly DB_NAME=slurm_acct_db
readonly DB_USER=slurm
# MariaDB listens on its unix socket only (skip-networking): not a secret.
readonly DB_PASS=gridtune-local

CPUS_WANTED=${SLURM_LOCAL_CPUS:-auto}
NGPUS=${SLURM_LOCAL_GPUS:-2}
MEM_WANTED=${SLURM_LOCAL_MEM_MB:-auto}
MAX_ARRAY_SIZE=${SLURM_LOCAL_MAX_ARRAY_SIZE:-}
ACCOUNTING=${SLURM_LOCAL_ACCOUNTING:-slurmdbd}
DO_INSTALL=${SLURM_LOCAL_INSTALL:-1}
SMOKE=${SLURM_LOCAL_SMOKE:-1}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-120}
LOCK_TIMEOUT=${SLURM_LOCAL_LOCK_TIMEOUT:-600}

# Where each daemon writes its PID (Debian defaults, or set in our configs).
declare -A PIDFILE=(
  [munged]=/run/munge/munged.pid
  [mariadbd]=/run/mysqld/mysqld.pid
  [slurmdbd]=/run/slurmdbd.pid
  [slurmctld]=/run/slurmctld.pid
  [slurmd]=/run/slurmd.pid
)

# --- small helpers -------------------------------------------------------------

# Microseconds since the epoch, without forking (the decimal separator of
# EPOCHREALTIME follows the locale).
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$((10#$t))"; }
T_START=$(now_us)
# seconds since $1 (microseconds), e.g. "1.23"
since() { local d=$(($(now_us) - $1)); printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000)); }

log() { printf '[slurm_local %6ss] %s\n' "$(since "$T_START")" "$*"; }
die() { printf '[slurm_local] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'printf "[slurm_local] failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

need_root() { [ "$(id -u)" = 0 ] || die "'$1' must run as root"; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Run CMD... until it succeeds or SECONDS pass (polled every 0.1 s).
wait_until() {
  local secs=$1 what=$2 t0; shift 2
  t0=$(now_us)
  until "$@" >/dev/null 2>&1; do
    if (($(now_us) - t0 > secs * 1000000)); then
      log "gave up after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

# --- serialising up/down --------------------------------------------------------

# Take the lock on an fd of our own. Every daemon is started through `spawn`,
# which closes that fd first: munged and slurmdbd do not close inherited fds, so
# a daemon holding it would block every later up/down forever.
LOCK_FD=
take_lock() {
  mkdir -p "$STARTED"
  exec {LOCK_FD}>"$RUN_DIR/lock"
  if ! flock -n "$LOCK_FD"; then
    log "another up/down is running; waiting up to ${LOCK_TIMEOUT}s for it"
    flock -w "$LOCK_TIMEOUT" "$LOCK_FD" || die "could not get $RUN_DIR/lock"
  fi
}
spawn() { "$@" {LOCK_FD}>&-; }

# --- daemon bookkeeping ----------------------------------------------------------

# Field 22 of /proc/PID/stat (start time in clock ticks since boot). PID plus
# start time identifies a process even after a reboot reused the PID (/run is
# not always a tmpfs, so PID files can outlive their process).
start_time() {
  local stat fields
  # (read, not $(<file): a file vanishing under $(<...) aborts the whole script)
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -ra fields <<<"${stat##*) }"
  echo "${fields[19]}"
}

# is_running PID NAME: PID is a live (not zombie) process called NAME.
# A killed daemon stays a zombie until init reaps it, with /proc entries intact.
is_running() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  [[ $stat == "$1 ($2) "* && $stat != "$1 ($2) Z "* ]]
}

# live_pid NAME: print the PID from NAME's PID file if that process is NAME.
live_pid() {
  local f=${PIDFILE[$1]} pid
  [ -s "$f" ] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] && is_running "$pid" "$1" || return 1
  echo "$pid"
}

# Record that this script started NAME (call once it is up).
mark_started() {
  local pid
  pid=$(live_pid "$1") || die "$1 started but its PID file ${PIDFILE[$1]} is missing"
  echo "$pid $(start_time "$pid")" >"$STARTED/$1"
}

# our_pid NAME: print NAME's PID if it is running and this script started it.
our_pid() {
  local pid st
  [ -s "$STARTED/$1" ] || return 1
  read -r pid st <"$STARTED/$1" || return 1
  is_running "$pid" "$1" && [ "$(start_time "$pid" 2>/dev/null)" = "$st" ] || return 1
  echo "$pid"
}

# stop_daemons NAME...: SIGTERM to each running one, wait up to 30 s for all of
# them, then SIGKILL what is left. Works for daemons we did not start too (used
# when a config change needs a restart).
stop_daemons() {
  local name pid t0 alive=()
  declare -A pids=()
  for name in "$@"; do
    if pid=$(live_pid "$name"); then
      pids[$name]=$pid
      kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$STARTED/$name"
  done
  ((${#pids[@]})) || return 0
  t0=$(now_us)
  while :; do
    alive=()
    for name in "${!pids[@]}"; do
      if is_running "${pids[$name]}" "$name"; then alive+=("$name"); fi
    done
    ((${#alive[@]})) || break
    if (($(now_us) - t0 > 30000000)); then
      log "still running after 30 s, sending SIGKILL: ${alive[*]}"
      for name in "${alive[@]}"; do kill -KILL "${pids[$name]}" 2>/dev/null || true; done
      break
    fi
    sleep 0.1
  done
  for name in "${!pids[@]}"; do log "stopped $name (pid ${pids[$name]})"; done
}

# --- cluster queries ---------------------------------------------------------------

node_state() {
  local out
  out=$(sinfo -h -N -n "$1" -o %T 2>/dev/null) || return 1
  echo "${out%%$'\n'*}"
}
# A trailing "*" (not responding) or drain/down/unknown means no job can start.
node_usable() {
  case "$(node_state "$1")" in
    idle | mixed | allocated | completing | planned) return 0 ;;
    *) return 1 ;;
  esac
}
ctld_up() { local out; out=$(scontrol ping 2>/dev/null) && [[ $out == *"is UP"* ]]; }
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mariadb_up() { mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1; }
dbd_up() { sacctmgr -n show cluster >/dev/null 2>&1; }
# Cheap liveness check for the fast path (sacctmgr takes 0.2-0.4 s per call).
dbd_listening() { (: <>/dev/tcp/127.0.0.1/6819) 2>/dev/null; }

# ==================================================================================
# up
# ==================================================================================

# write_if_changed DEST MODE < content: returns 0 if DEST was (re)written.
write_if_changed() {
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    return 1
  fi
  install -m "$mode" -o root -g root "$tmp" "$dest"
  rm -f "$tmp"
  log "wrote $dest"
}

POLICY_RC_ADDED=0
remove_policy_rc() {
  if [ "$POLICY_RC_ADDED" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    POLICY_RC_ADDED=0
  fi
}

install_packages() {
  local pkgs=(munge slurm-client slurmctld slurmd) missing=() installed p t0 candidates
  [ "$ACCOUNTING" = slurmdbd ] && pkgs+=(slurmdbd mariadb-server)
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null |
    awk '/ install ok installed$/ {print $1}') || true
  for p in "${pkgs[@]}"; do
    grep -qx "$p" <<<"$installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "packages present: ${pkgs[*]}"
    return 0
  fi
  [ "$DO_INSTALL" = 1 ] || die "missing packages (${missing[*]}) and SLURM_LOCAL_INSTALL=0"

  t0=$(now_us)
  log "installing: ${missing[*]}"
  # Without systemd, the packages' postinst scripts would start the daemons with
  # stock configs (via invoke-rc.d). A policy-rc.d that exits 101 forbids that.
  # Add one only if the machine has none, and always remove it again.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, from gridtune scripts/slurm_local.sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_ADDED=1
    trap remove_policy_rc EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -q -o DPkg::Lock::Timeout=600
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  # Refresh the package lists only if apt has no candidate for some package
  # (e.g. a fresh image without lists). Output is captured first: grep -q on a
  # pipe would SIGPIPE apt-cache and, with pipefail, look like a failure.
  candidates=$(apt-cache policy "${missing[@]}" 2>/dev/null) || true
  # apt's chatter goes to a log file; it is shown only if the install fails.
  local apt_log=$RUN_DIR/apt.log
  : >"$apt_log"
  if (($(grep -c 'Candidate: [0-9]' <<<"$candidates" || true) < ${#missing[@]})); then
    log "apt-get update (no candidate for some packages)"
    "${apt[@]}" update >>"$apt_log" 2>&1 || true
  fi
  if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1; then
    log "install failed; retrying after apt-get update"
    if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; } >>"$apt_log" 2>&1; then
      tail -n 30 "$apt_log" >&2
      die "apt-get install failed (full output: $apt_log)"
    fi
  fi
  remove_policy_rc
  log "packages installed in $(since "$t0") s (apt output: $apt_log)"
}

prepare_files() {
  mkdir -p "$ETC" "$STATE/slurmctld" "$STATE/slurmd" "$LOGS"
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    head -c 1024 /dev/urandom >/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key

  # Fake GPUs: character devices with /dev/null's numbers (1,3). Where mknod is
  # not allowed (some containers), regular files work too; slurmd then only logs
  # "is not a valid character or block device".
  local i f
  if ((NGPUS > 0)); then
    mkdir -p "$FAKE_GPU_DIR"
    for ((i = 0; i < NGPUS; i++)); do
      f=$FAKE_GPU_DIR/gpu$i
      [ -c "$f" ] && continue
      rm -f "$f"
      mknod -m 0666 "$f" c 1 3 2>/dev/null || touch "$f"
    done
  fi
}

# Sets NODE, CPUS, MEM, and writes the configs. Sets SLURM_CONF_CHANGED and
# DBD_CONF_CHANGED to 1 when the corresponding daemons need a restart.
SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0
write_configs() {
  # Hardware as slurmd sees it; first line, e.g.
  # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
  local line kv topology overrides=0 real_cpus real_mem acct gres_node="" gpu_files array_conf=""
  declare -A hw=()
  line=$(slurmd -C)
  line=${line%%$'\n'*}
  for kv in $line; do hw[${kv%%=*}]=${kv#*=}; done
  NODE=${hw[NodeName]}
  real_cpus=${hw[CPUs]}
  real_mem=${hw[RealMemory]}

  if [ "$CPUS_WANTED" = auto ]; then
    CPUS=$((real_cpus > 4 ? real_cpus : 4))
  else
    if ! is_uint "$CPUS_WANTED" || ((CPUS_WANTED == 0)); then
      die "SLURM_LOCAL_CPUS must be auto or a positive number"
    fi
    CPUS=$CPUS_WANTED
  fi
  if ((CPUS == real_cpus)); then
    topology="Boards=${hw[Boards]} SocketsPerBoard=${hw[SocketsPerBoard]} CoresPerSocket=${hw[CoresPerSocket]} ThreadsPerCore=${hw[ThreadsPerCore]}"
  else
    topology="Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1"
    overrides=1
  fi
  if [ "$MEM_WANTED" = auto ]; then
    # A node that reports less memory than configured is drained ("Low
    # RealMemory"); the margin keeps it schedulable when free memory shifts.
    MEM=$((real_mem > 2048 ? real_mem - 512 : real_mem))
  else
    is_uint "$MEM_WANTED" || die "SLURM_LOCAL_MEM_MB must be auto or a number"
    MEM=$MEM_WANTED
    ((MEM <= real_mem)) || overrides=1
  fi

  if [ "$ACCOUNTING" = slurmdbd ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu"
  else
    acct="AccountingStorageType=accounting_storage/none"
  fi
  # (no line at all when unset, so that the file, and the running daemons, stay as they were)
  if [ -n "$MAX_ARRAY_SIZE" ]; then
    array_conf="# Arrays of at most $MAX_ARRAY_SIZE tasks (SLURM_LOCAL_MAX_ARRAY_SIZE).
MaxArraySize=$MAX_ARRAY_SIZE
"
  fi
  if ((NGPUS > 0)); then
    gres_node="Gres=gpu:$NGPUS"
    if ((NGPUS == 1)); then gpu_files=$FAKE_GPU_DIR/gpu0; else gpu_files="$FAKE_GPU_DIR/gpu[0-$((NGPUS - 1))]"; fi
  fi

  write_if_changed "$ETC/slurm.conf" 0644 <<EOF && SLURM_CONF_CHANGED=1
# Generated by gridtune's scripts/slurm_local.sh -- the next 'up' overwrites edits.
# A single-node cluster for running and testing gridtune's SLURM launcher.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a REQUEUED job must wait before it may start
# again (default 120 s, plus up to sched_interval): 10 s gives ~12 s requeues.
AuthInfo=cred_expire=10
MpiDefault=none
# No cgroups needed: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$( ((overrides)) && printf '%s\n' "# The node declares more CPUs/memory than it has: trust the config, don't drain." "SlurmdParameters=config_overrides")
# batch_sched_delay=0 starts batch jobs at the next scheduler pass (~1 s) rather
# than up to 3 s later; sched_interval=2 (default 60) re-runs the full scheduler
# often, which is what notices a requeued job's begin time has passed.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
SelectType=select/cons_tres
# CPUs are consumable, memory is not: --mem up to RealMemory never blocks others.
SelectTypeParameters=CR_CPU
# Reject impossible requests at submit time instead of leaving them PENDING.
EnforcePartLimits=ALL
ReturnToService=2
# SIGKILL 5 s after SIGTERM on scancel/requeue/preemption (default 30 s).
KillWait=5
# No mail program on CI machines; the default /usr/bin/mail only logs errors.
MailProg=/bin/true
MinJobAge=300
InactiveLimit=0
Waittime=0
${array_conf}GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS $topology RealMemory=$MEM $gres_node State=UNKNOWN
# Jobs in '$URGENT_PARTITION' (higher PriorityTier) preempt jobs in '$PARTITION', which
# are requeued. preempt_send_user_signal (22.05 spelling; later releases use
# PreemptParameters=send_user_signal, an unknown key here that would make every
# SLURM command fail) sends the job's --signal first, so submitit checkpoints.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
PartitionName=$PARTITION Nodes=$NODE Default=YES DefaultTime=60 MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=$URGENT_PARTITION Nodes=$NODE Default=NO DefaultTime=60 MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF

  write_if_changed "$ETC/gres.conf" 0644 <<EOF && SLURM_CONF_CHANGED=1
# Generated by gridtune's scripts/slurm_local.sh. $NGPUS FAKE GPUs: copies of /dev/null.
$( ((NGPUS > 0)) && echo "NodeName=$NODE Name=gpu File=$gpu_files")
EOF

  if [ "$ACCOUNTING" = slurmdbd ]; then
    # slurmdbd refuses a config readable by others.
    write_if_changed "$ETC/slurmdbd.conf" 0600 <<EOF && DBD_CONF_CHANGED=1
# Generated by gridtune's scripts/slurm_local.sh -- the next 'up' overwrites edits.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOGS/slurmdbd.log
PidFile=${PIDFILE[slurmdbd]}
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF
  fi
  return 0
}

start_munged() {
  # (the munge client retries a dead socket for seconds: check the PID first)
  if live_pid munged >/dev/null && munge_works; then
    log "munged already running"
    return 0
  fi
  # An unclean stop leaves a socket/lock that makes munged refuse to start.
  if ! live_pid munged >/dev/null; then
    rm -f "${PIDFILE[munged]}" /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  fi
  spawn runuser -u munge -- /usr/sbin/munged
  wait_until "$TIMEOUT" munged munge_works || die "munged did not start (see /var/log/munge/munged.log)"
  mark_started munged
  log "munged started"
}

start_accounting() {
  local t0
  if mariadb_up; then
    log "mariadb already running"
  else
    t0=$(now_us)
    install -d -o mysql -g root -m 0755 /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
      log "initialising the MariaDB data directory"
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    # No systemd unit to run it: start-stop-daemon puts it in the background.
    # Socket only (--skip-networking); a small buffer pool is plenty for sacct.
    spawn start-stop-daemon --start --background --oknodo --exec /usr/sbin/mariadbd -- \
      --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
      --pid-file="${PIDFILE[mariadbd]}" --innodb-buffer-pool-size=256M \
      --innodb-lock-wait-timeout=900 --log-error="$LOGS/mariadb.log"
    wait_until "$TIMEOUT" mariadb mariadb_up || die "mariadb did not start (see $LOGS/mariadb.log)"
    mark_started mariadbd
    log "mariadb started in $(since "$t0") s"
  fi

  if [ "$DBD_CONF_CHANGED" = 0 ] && live_pid slurmdbd >/dev/null && dbd_listening; then
    log "slurmdbd already running"
    return 0
  fi
  t0=$(now_us)
  # root connects through MariaDB's unix_socket auth; all statements are
  # idempotent, so this also repairs a half-initialised database.
  mariadb -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
    CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';"
  stop_daemons slurmdbd
  spawn slurmdbd
  # sacctmgr answers once slurmdbd has connected to MariaDB.
  wait_until "$TIMEOUT" slurmdbd dbd_up || die "slurmdbd did not start (see $LOGS/slurmdbd.log)"
  mark_started slurmdbd
  log "slurmdbd started in $(since "$t0") s"
  # Register the cluster before slurmctld first connects.
  local clusters
  clusters=$(sacctmgr -n -P show cluster format=cluster 2>/dev/null) || true
  if ! grep -qx "$CLUSTER" <<<"$clusters"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    log "registered cluster $CLUSTER with slurmdbd"
  fi
}

start_slurm() {
  local t0
  if [ "$SLURM_CONF_CHANGED" = 1 ]; then
    # Both must re-read slurm.conf ("appears to have a different slurm.conf"
    # otherwise). Running job steps survive this restart.
    if live_pid slurmctld >/dev/null || live_pid slurmd >/dev/null; then
      log "configuration changed: restarting slurmctld and slurmd"
      stop_daemons slurmd slurmctld
    fi
  fi
  if live_pid slurmctld >/dev/null && ctld_up; then
    log "slurmctld already running"
  else
    t0=$(now_us)
    stop_daemons slurmctld
    spawn slurmctld
    wait_until "$TIMEOUT" slurmctld ctld_up || die "slurmctld did not start (see $LOGS/slurmctld.log)"
    mark_started slurmctld
    log "slurmctld started in $(since "$t0") s"
  fi
  if live_pid slurmd >/dev/null; then
    log "slurmd already running"
  else
    t0=$(now_us)
    spawn slurmd
    wait_until "$TIMEOUT" slurmd live_pid slurmd || die "slurmd did not start (see $LOGS/slurmd.log)"
    mark_started slurmd
    log "slurmd started in $(since "$t0") s"
  fi

  t0=$(now_us)
  if ! wait_until 20 "node $NODE to be schedulable" node_usable "$NODE"; then
    # Typically drained by an earlier, different config: resume it once.
    log "node $NODE is '$(node_state "$NODE")' ($(scontrol show node "$NODE" | sed -n 's/.*Reason=//p')); resuming it"
    scontrol update nodename="$NODE" state=resume 2>/dev/null || true
    if ! wait_until "$TIMEOUT" "node $NODE to be schedulable" node_usable "$NODE"; then
      tail -n 20 "$LOGS/slurmctld.log" >&2 || true
      die "node $NODE is '$(node_state "$NODE")'"
    fi
  fi
  log "node $NODE is $(node_state "$NODE") (waited $(since "$t0") s)"
}

smoke_test() {
  local t0 out state
  [ "$SMOKE" = 1 ] || return 0
  state=$(node_state "$NODE")
  # On a busy node srun would just queue behind the running jobs.
  if [ "$state" != idle ]; then
    log "smoke test skipped: node is $state"
    return 0
  fi
  t0=$(now_us)
  out=$(timeout 60 srun -p "$PARTITION" -N1 -n1 -t 1 --quiet hostname) || die "smoke test 'srun hostname' failed"
  log "smoke test: srun hostname -> $out ($(since "$t0") s)"
}

cmd_up() {
  need_root up
  case "$ACCOUNTING" in slurmdbd | none) ;; *) die "SLURM_LOCAL_ACCOUNTING must be slurmdbd or none" ;; esac
  is_uint "$NGPUS" || die "SLURM_LOCAL_GPUS must be a number"
  if [ -n "$MAX_ARRAY_SIZE" ] && { ! is_uint "$MAX_ARRAY_SIZE" || ((MAX_ARRAY_SIZE == 0)); }; then
    die "SLURM_LOCAL_MAX_ARRAY_SIZE must be a positive number"
  fi
  take_lock
  local t0
  install_packages
  t0=$(now_us)
  prepare_files
  write_configs
  log "configuration checked in $(since "$t0") s (slurm.conf changed: $SLURM_CONF_CHANGED, slurmdbd.conf changed: $DBD_CONF_CHANGED)"
  start_munged
  if [ "$ACCOUNTING" = slurmdbd ]; then start_accounting; fi
  start_slurm
  smoke_test
  local sacct_note="sacct works"
  [ "$ACCOUNTING" = slurmdbd ] || sacct_note="sacct disabled (SLURM_LOCAL_ACCOUNTING=none)"
  cat <<EOF
SLURM $(dpkg-query -W -f='${Version}' slurmctld) cluster '$CLUSTER' is up ($(since "$T_START") s)
  node $NODE: CPUs=$CPUS RealMemory=${MEM}MB fake GPUs=$NGPUS
  partitions: $PARTITION (default), $URGENT_PARTITION (preempts $PARTITION; preempted jobs are requeued)
  accounting: $ACCOUNTING, $sacct_note
  try: sbatch --wrap hostname; squeue; sacct -X     logs: $LOGS/*.log
  stop: $0 down
EOF
}

# ==================================================================================
# down
# ==================================================================================

cancel_jobs() {
  local jobs t0
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || return 0
  [ -n "${jobs// /}" ] || return 0
  t0=$(now_us)
  log "cancelling jobs: $jobs"
  # Job processes (and slurmstepd) outlive slurmd, so end them while it runs.
  # shellcheck disable=SC2086 # one word per job id
  scancel $jobs 2>/dev/null || true
  # KillWait=5: anything ignoring SIGTERM is killed after 5 s. (A job can only
  # linger when slurmctld lost track of it, e.g. after a kill -9.)
  if ! wait_until 15 "cancelled jobs to end" test -z "$(squeue -h -o %A 2>/dev/null)"; then
    log "warning: still queued: $(squeue -h -o '%A %T' 2>/dev/null | tr '\n' ' ')"
  fi
  log "jobs ended in $(since "$t0") s"
}

cmd_down() {
  need_root down
  take_lock
  local name foreign=() ours=() t0 steps
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    if our_pid "$name" >/dev/null; then
      ours+=("$name")
    else
      rm -f "$STARTED/$name"
      live_pid "$name" >/dev/null && foreign+=("$name")
    fi
  done
  if ((${#foreign[@]})); then
    log "not started by this script, left running: ${foreign[*]}"
  fi
  if ((${#ours[@]} == 0)); then
    log "nothing to stop"
    return 0
  fi
  if [[ " ${ours[*]} " == *" slurmctld "* ]]; then cancel_jobs; fi

  t0=$(now_us)
  # slurmctld flushes job records to slurmdbd on exit, and every daemon needs
  # munged to the end: stop in dependency order, each group in parallel.
  local group d todo
  for group in "slurmd slurmctld" "slurmdbd" "mariadbd munged"; do
    todo=()
    for d in $group; do
      if [[ " ${ours[*]} " == *" $d "* ]]; then todo+=("$d"); fi
    done
    if ((${#todo[@]})); then stop_daemons "${todo[@]}"; fi
  done
  steps=$(ps -C slurmstepd -o pid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ {printf " %s", $1}') || true
  [ -z "$steps" ] || log "warning: slurmstepd still running (pids:$steps)"
  log "stopped ${ours[*]} in $(since "$t0") s (total $(since "$T_START") s); config, state and job history kept"
}

# ==================================================================================
# status
# ==================================================================================

cmd_status() {
  local name pid usable=1 state
  if ! command -v sinfo >/dev/null; then
    echo "SLURM is not installed (run: $0 up)"
    return 1
  fi
  if [ ! -r "$ETC/slurm.conf" ]; then
    echo "no readable $ETC/slurm.conf (run: $0 up)"
    return 1
  fi
  echo "daemons:"
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    if pid=$(live_pid "$name"); then
      if our_pid "$name" >/dev/null; then
        echo "  $name: running (pid $pid, started by slurm_local.sh)"
      else
        echo "  $name: running (pid $pid)"
      fi
    else
      echo "  $name: not running"
    fi
  done
  if ! ctld_up; then
    echo "slurmctld does not answer (scontrol ping)"
    return 1
  fi
  echo
  sinfo || usable=0
  echo
  squeue || usable=0
  echo
  # Usable = the controller answers and at least one node can start jobs.
  state=$(sinfo -h -N -o '%N %T' 2>/dev/null) || state=""
  if ! grep -Eq ' (idle|mixed|allocated|completing|planned)$' <<<"$state"; then
    echo "no schedulable node: ${state//$'\n'/, }"
    usable=0
  fi
  if grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$ETC/slurm.conf"; then
    if sacct -n -X -o JobID >/dev/null 2>&1; then
      echo "sacct: works"
    else
      echo "sacct: NOT working (is slurmdbd up? see $LOGS/slurmdbd.log)"
      usable=0
    fi
  else
    echo "sacct: disabled (no slurmdbd accounting)"
  fi
  if ((usable)); then
    echo "cluster is usable"
    return 0
  fi
  echo "cluster is NOT usable"
  return 1
}

usage() { sed -n '2,/^# =====/{/^# =====/d;s/^# \{0,1\}//;p}' "$0"; }

main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status)
      # a non-zero status is an answer here, not an error: keep the ERR trap quiet
      local rc=0
      cmd_status || rc=$?
      exit "$rc"
      ;;
    -h | --help | help) usage ;;
    *)
      echo "usage: $0 up|down|status   ($0 --help for details)" >&2
      exit 2
      ;;
  esac
}

main "$@"

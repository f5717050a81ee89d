#!/usr/bin/env bash
# A single-node Slurm on this machine, for the tests of `--executor slurm`: Debian's
# slurm-wlm and munge, slurmctld and slurmd on localhost, one partition `debug`.
# Run as root. Idempotent: a second call finds the daemons up and does nothing.
#   .ci/slurm-up.sh          install (if missing), configure, start; wait until the node is idle
#   .ci/slurm-up.sh down     stop the daemons this script started
# The node declares more CPUs and memory than the machine has (config_overrides): the
# tests run many small sleeping jobs at once, and the sandbox, not Slurm, limits a step.
set -euo pipefail
state=${SCIENTIST_SLURM_DIR:-/var/lib/scientist-slurm}
conf=/etc/slurm/slurm.conf
host=$(hostname -s)

down() {
  for d in slurmd slurmctld; do
    if [ -f "$state/$d.pid" ] && kill "$(cat "$state/$d.pid")" 2>/dev/null; then
      echo "stopped $d"
    fi
  done
  if [ -f "$state/munged.pid" ] && kill "$(cat "$state/munged.pid")" 2>/dev/null; then
    echo "stopped munged"
  fi
}
if [ "${1:-}" = down ]; then down; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  exit 0  # up already
fi
mkdir -p "$state"/ctld "$state"/d /run/munge /var/log/munge
chown munge:munge /run/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$state/munged.pid"
fi
cat > "$conf" <<CONF
# written by .ci/slurm-up.sh: a single-node cluster for the tests
ClusterName=scientist-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# schedule a batch job when it is submitted (the default waits up to 3 s, one job per pass)
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=5
MinJobAge=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=32 RealMemory=256000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld
slurmd
for _ in $(seq 60); do
  sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
if ! sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'; then
  sinfo || true
  tail -n 20 "$state/slurmctld.log" "$state/slurmd.log" || true
  exit 1
fi
sinfo

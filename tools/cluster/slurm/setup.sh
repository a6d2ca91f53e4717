#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (DESIGN §10, issue #20): installs Debian's slurm-wlm and munge when they
# are missing, writes a minimal slurm.conf for localhost (marked as ours; an existing foreign one is left alone), and
# starts munged, slurmctld and slurmd. Idempotent: a running cluster is left as it is. Needs root.
#   tools/cluster/slurm/setup.sh          start (and install) the cluster
#   tools/cluster/slurm/setup.sh --stop   stop the daemons this script started
set -euo pipefail
conf=/etc/slurm/slurm.conf
marker="# written by OnnxAlign tools/cluster/slurm/setup.sh"

if [[ "${1:-}" == "--stop" ]]; then
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 100); do { pgrep -x slurmd || pgrep -x slurmctld; } >/dev/null || exit 0; sleep 0.1; done
  echo "setup.sh: the daemons did not stop" >&2; exit 1
fi
if [[ $(id -u) -ne 0 ]]; then echo "setup.sh: needs root (it installs packages and starts daemons)" >&2; exit 2; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  echo "installing slurm-wlm and munge (apt) …"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a key, its folders, the daemon.
if [[ ! -s /etc/munge/munge.key ]]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
if [[ -f "$conf" ]] && ! grep -qF "$marker" "$conf"; then
  echo "setup.sh: $conf exists and is not ours; using it as it is"
else
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > "$conf" <<CONF
$marker
ClusterName=onnxalign
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
# No cgroups: containers and CI machines rarely delegate them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
fi

pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for _ in $(seq 100); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  if [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]; then echo "slurm: node $host $state ($cpus CPUs)"; exit 0; fi
  if [[ "$state" == down* || "$state" == drain* ]]; then scontrol update nodename="$host" state=resume 2>/dev/null || true; fi
  sleep 0.2
done
echo "setup.sh: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1

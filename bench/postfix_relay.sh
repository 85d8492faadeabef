#!/usr/bin/env bash
# The yardstick: Debian's Postfix relaying N x 2 KB messages from smtp-source to smtp-sink on
# loopback. Own config and queue under $D (no chroot, no syslog), Postfix defaults otherwise
# (fsync on). Adapted from the team's shared recipe so the repository stands on its own.
# usage: postfix_relay.sh [N] [SESSIONS]  -> last line: postfix N= inject_s= e2e_s= msgs_per_s= sent=
# INJECT_ONLY=1: no queue manager, so mail stays in incoming/ as Postfix's smtpd and cleanup
# left it; the last line is then: postfix N= inject_s= cpu_ms_per_msg= user_ms_per_msg=
# (CPU of the master and every process under it, reaped ones included, during the injection)
# MILTER=inet:127.0.0.1:PORT: Postfix's smtpd passes every message through that milter (OpenDKIM
# for bench/relay --dkim); FROM: the envelope and header sender; SINK_DUMP=DIR: smtp-sink keeps
# each message there (DIR writable by nobody), to check what was received.
set -euo pipefail
export PATH="$PATH:/usr/sbin"
N=${1:-10000}; S=${2:-20}; D=${D:-/tmp/sendworx-bench-postfix}; SINK=${SINK:-2626}; PORT=${PORT:-10026}
postfix -c $D/etc stop >/dev/null 2>&1 || true; [ -f $D/sink.pid ] && kill "$(cat $D/sink.pid)" 2>/dev/null || true
rm -rf $D; mkdir -p $D/etc $D/spool $D/data; cp /etc/postfix/master.cf $D/etc/
# A "No configuration" install has no main.cf: an empty one means the compiled-in defaults.
cp /etc/postfix/main.cf $D/etc/ 2>/dev/null || : > $D/etc/main.cf
awk '/^[a-z]/ && NF>=8 {$5="n"} {print}' $D/etc/master.cf > $D/m && mv $D/m $D/etc/master.cf
sed -i "s/^smtp inet /127.0.0.1:$PORT inet /" $D/etc/master.cf
# No queue manager also means no flow-control tokens: without in_flow_delay=0 every message
# would wait a second for one.
[ "${INJECT_ONLY:-}" = 1 ] && sed -i 's/^qmgr /#qmgr /' $D/etc/master.cf && postconf -c $D/etc -e in_flow_delay=0
[ -n "${MILTER:-}" ] && postconf -c $D/etc -e "smtpd_milters=$MILTER" milter_default_action=tempfail
FROM=${FROM:-b@localhost}
postconf -c $D/etc -X default_destination_concurrency_limit smtp_destination_concurrency_limit default_process_limit 2>/dev/null || true
postconf -c $D/etc -e "queue_directory=$D/spool" "data_directory=$D/data" "relayhost=[127.0.0.1]:$SINK" \
  inet_interfaces=127.0.0.1 inet_protocols=ipv4 mydestination= myhostname=bench.localdomain mynetworks=127.0.0.0/8 \
  smtpd_recipient_restrictions=permit_mynetworks,reject "maillog_file=$D/maillog" maillog_file_prefixes=/tmp \
  compatibility_level=3.6 disable_dns_lookups=yes smtp_host_lookup=native alias_maps= alias_database= \
  default_transport=smtp relay_transport=relay
chown postfix $D/data; postfix -c $D/etc set-permissions >/dev/null 2>&1 || true
postfix -c $D/etc start >/dev/null 2>&1
# Without a queue manager, cleanup's wake-up would fail and wait each time; a fifo nobody reads
# takes the wake-ups (one byte per message, well inside a pipe's buffer).
[ "${INJECT_ONLY:-}" = 1 ] && mkfifo -m 622 $D/spool/public/qmgr && chown postfix $D/spool/public/qmgr
(smtp-sink -u nobody ${SINK_DUMP:+-d $SINK_DUMP/m} -c 127.0.0.1:$SINK 2000 >$D/sink.out 2>&1 & echo $! >$D/sink.pid); sleep 1
# user and system clock ticks of the master and every process under it, reaped ones included
tree_cpu() { python3 "$(dirname "$0")/proc_cpu.py" "$(head -1 $D/spool/pid/master.pid | tr -d ' ')"; }
read u0 s0 < <(tree_cpu)
t0=$(date +%s.%N); smtp-source -s $S -l 2048 -m $N -f $FROM -t a@example.com 127.0.0.1:$PORT; t1=$(date +%s.%N)
if [ "${INJECT_ONLY:-}" = 1 ]; then
  sleep 0.5; read u1 s1 < <(tree_cpu)  # cleanup has finished the last file by now
  postfix -c $D/etc stop >/dev/null 2>&1 || true; kill "$(cat $D/sink.pid)" 2>/dev/null || true
  python3 -c "import os; t = os.sysconf('SC_CLK_TCK'); print('postfix N=$N inject_s=%.2f cpu_ms_per_msg=%.2f user_ms_per_msg=%.2f' % ($t1-$t0, ($u1-$u0+$s1-$s0)*1000/t/$N, ($u1-$u0)*1000/t/$N))"
  exit 0
fi
while :; do q=$(find $D/spool/incoming $D/spool/active $D/spool/deferred $D/spool/maildrop -type f 2>/dev/null | wc -l); [ "$q" = 0 ] && break; sleep 0.2; done
t2=$(date +%s.%N); sent=$(grep -c 'status=sent' $D/maillog || true)
postfix -c $D/etc stop >/dev/null 2>&1 || true; kill "$(cat $D/sink.pid)" 2>/dev/null || true
python3 -c "print('postfix N=$N inject_s=%.2f e2e_s=%.2f msgs_per_s=%.0f sent=$sent' % ($t1-$t0, $t2-$t0, $N/($t2-$t0)))"

#!/usr/bin/env bash
# callguard's Kafka ACLs: four principals, each allowed what it needs and nothing
# else, applied with Kafka's own kafka-acls.sh (org.apache.kafka.tools.AclCommand).
# deploy/kafka/README.md says who may do what, and why.
#
#   deploy/kafka/acls.sh --bootstrap-server HOST:PORT [--command-config admin.properties]
#                        [--exactly-once] [--worker-creates-topics] [--remove] [--print]
#
#   --command-config FILE     the admin client's properties (an administrator's SASL
#                             login and the CA), as for kafka-acls.sh itself
#   --exactly-once            also let the worker use its transactional ids
#                             (CALLGUARD_PROCESSING_GUARANTEE=exactly_once)
#   --worker-creates-topics   also let the worker create callguard's topics at start
#                             (default: an administrator creates them with topics.sh)
#   --remove                  remove these ACLs instead of adding them
#   --print                   print the kafka-acls.sh commands, run nothing
#
# Environment (defaults in brackets):
#   DIALER_PRINCIPAL    [User:callguard-dialer]    dialers and the Python client
#   CONSENTS_PRINCIPAL  [User:callguard-consents]  the source of consents and opt-outs
#   WORKER_PRINCIPAL    [User:callguard-worker]    callguard worker (and its POST /v1/check)
#   AUDITOR_PRINCIPAL   [User:callguard-auditor]   callguard audit verify|export|sink|search, replay
#   CALLGUARD_APP_ID    [callguard]                the workers' consumer group, as the workers have it
#   AUDIT_SINK_GROUP    [callguard-audit-sink]     the consumer group of `callguard audit sink`
#   KAFKA_ACLS          [kafka-acls.sh]            the command to run (split on spaces)
set -euo pipefail

DIALER=${DIALER_PRINCIPAL:-User:callguard-dialer}
CONSENTS=${CONSENTS_PRINCIPAL:-User:callguard-consents}
WORKER=${WORKER_PRINCIPAL:-User:callguard-worker}
AUDITOR=${AUDITOR_PRINCIPAL:-User:callguard-auditor}
APP_ID=${CALLGUARD_APP_ID:-callguard}
SINK_GROUP=${AUDIT_SINK_GROUP:-callguard-audit-sink}
read -r -a KAFKA_ACLS_COMMAND <<<"${KAFKA_ACLS:-kafka-acls.sh}"

INTENTS=callguard.intents
DECISIONS=callguard.decisions
AUDIT=callguard.audit
DEADLETTER=callguard.deadletter
OPTOUTS=callguard.optouts
OUTCOMES=callguard.outcomes
CONSENTS_TOPIC=callguard.consents
ALL_TOPICS=("$INTENTS" "$DECISIONS" "$AUDIT" "$DEADLETTER" "$OPTOUTS" "$OUTCOMES" "$CONSENTS_TOPIC")

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

connection=()
action=--add
exactly_once=no
creates_topics=no
print=no
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-server | --command-config)
      [ $# -ge 2 ] || usage
      connection+=("$1" "$2")
      shift 2 ;;
    --exactly-once) exactly_once=yes; shift ;;
    --worker-creates-topics) creates_topics=yes; shift ;;
    --remove) action=--remove; shift ;;
    --print) print=yes; shift ;;
    -h | --help) usage ;;
    *) echo "acls.sh: unknown option $1" >&2; usage ;;
  esac
done
if [ "$print" = no ] && [[ " ${connection[*]-} " != *" --bootstrap-server "* ]]; then
  echo "acls.sh: --bootstrap-server is required" >&2
  usage
fi
for principal in "$DIALER" "$CONSENTS" "$WORKER" "$AUDITOR"; do
  case "$principal" in
    *:\* | *\** | "") echo "acls.sh: a principal must name one user, not '$principal'" >&2; exit 2 ;;
  esac
done

# grant PRINCIPAL OPERATIONS -- RESOURCE-OPTIONS: one kafka-acls.sh call (every
# operation on every resource named, literal names unless the options say otherwise)
grant() {
  local principal=$1 operations=$2
  shift 3
  local argv=("${KAFKA_ACLS_COMMAND[@]}" "${connection[@]}" "$action" --force --allow-principal "$principal")
  local operation
  for operation in $operations; do
    argv+=(--operation "$operation")
  done
  argv+=("$@")
  if [ "$print" = yes ]; then
    printf '%s\n' "${argv[*]}"
  else
    "${argv[@]}"
  fi
}

# dialer: publishes intents and outcomes, reads decisions (GuardClient reads them
# without a consumer group: every partition assigned, no offsets committed)
grant "$DIALER" "Write Describe" -- --topic $INTENTS --topic $OUTCOMES
grant "$DIALER" "Read Describe" -- --topic $DECISIONS

# consent source: publishes consents (and contracts, call requests) and opt-outs
grant "$CONSENTS" "Write Describe" -- --topic $CONSENTS_TOPIC --topic $OPTOUTS

# worker: reads its four inputs, the audit topic (the last record of a partition
# continues its hash chain) and the decisions (POST /v1/check's own client), in its
# consumer group; writes decisions, audit records and dead letters, and intents
# (POST /v1/check publishes the intents it is asked about)
grant "$WORKER" "Read Describe" -- --topic $INTENTS --topic $OPTOUTS --topic $CONSENTS_TOPIC --topic $OUTCOMES --topic $AUDIT --topic $DECISIONS \
  --group "$APP_ID"
grant "$WORKER" "Write Describe" -- --topic $DECISIONS --topic $AUDIT --topic $DEADLETTER --topic $INTENTS
if [ "$exactly_once" = yes ]; then
  # one transactional producer per input partition: <app id>-callguard.intents-<partition>
  grant "$WORKER" "Write Describe" -- --transactional-id "$APP_ID-$INTENTS-" --resource-pattern-type prefixed
fi
if [ "$creates_topics" = yes ]; then
  create=()
  for topic in "${ALL_TOPICS[@]}"; do
    create+=(--topic "$topic")
  done
  grant "$WORKER" "Create" -- "${create[@]}"
fi

# auditor: reads the audit trail; `audit sink` commits in its own consumer group
# (verify, export, search and replay read without one)
grant "$AUDITOR" "Read Describe" -- --topic "$AUDIT" --group "$SINK_GROUP"

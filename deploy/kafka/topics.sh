#!/usr/bin/env bash
# Create callguard's seven topics as an administrator, before the workers start
# (with deploy/kafka/acls.sh the worker may not create topics itself), with
# Kafka's own kafka-topics.sh. Topics that exist are left as they are.
#
#   deploy/kafka/topics.sh --bootstrap-server HOST:PORT [--command-config admin.properties]
#
# Environment (defaults in brackets):
#   CALLGUARD_TOPIC_PARTITIONS  [6]  partitions of each topic (the workers' default)
#   CALLGUARD_TOPIC_REPLICAS    [1]  replication factor (use 3 in production)
#   KAFKA_TOPICS                [kafka-topics.sh]  the command to run (split on spaces)
set -euo pipefail

PARTITIONS=${CALLGUARD_TOPIC_PARTITIONS:-6}
REPLICAS=${CALLGUARD_TOPIC_REPLICAS:-1}
read -r -a KAFKA_TOPICS_COMMAND <<<"${KAFKA_TOPICS:-kafka-topics.sh}"

connection=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-server | --command-config)
      if [ $# -lt 2 ]; then echo "topics.sh: $1 needs a value" >&2; exit 2; fi
      connection+=("$1" "$2")
      shift 2 ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
if [[ " ${connection[*]-} " != *" --bootstrap-server "* ]]; then
  echo "topics.sh: --bootstrap-server is required" >&2
  exit 2
fi

for topic in callguard.intents callguard.decisions callguard.audit callguard.deadletter \
  callguard.optouts callguard.outcomes callguard.consents; do
  "${KAFKA_TOPICS_COMMAND[@]}" "${connection[@]}" --create --if-not-exists --topic "$topic" \
    --partitions "$PARTITIONS" --replication-factor "$REPLICAS"
done

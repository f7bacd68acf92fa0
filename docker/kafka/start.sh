#!/bin/bash
# One node of the compose cluster: its server.properties from the KAFKA_* variables (mapped as the
# apache/kafka image maps them: KAFKA_ dropped, lower case, `___` -> `-`, `__` -> `_`, `_` -> `.`),
# its storage formatted on first start with the cluster id and the admin's SCRAM credential (KRaft
# keeps SCRAM users in its metadata log: the first one must be there before any client
# authenticates), then the broker, with the Prometheus JMX exporter agent on port 9404.
set -euo pipefail
props=/opt/kafka/config/parcours.properties
: > "$props"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_CLUSTER_ID|KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_LOG4J_OPTS|KAFKA_GC_LOG_OPTS|KAFKA_JMX_OPTS|KAFKA_HOME) continue ;;
  esac
  key=$(printf '%s' "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' | sed -e 's/___/-/g' -e 's/__/\x01/g' -e 's/_/./g' -e 's/\x01/_/g')
  printf '%s=%s\n' "$key" "$value" >> "$props"
done < <(env | grep '^KAFKA_')
printf 'listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="%s";\n' \
  "$PARCOURS_KAFKA_ADMIN_PASSWORD" >> "$props"
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "$KAFKA_CLUSTER_ID" -c "$props" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$PARCOURS_KAFKA_ADMIN_PASSWORD]"
export KAFKA_OPTS="-javaagent:/opt/jmx-exporter/jmx_prometheus_javaagent.jar=9404:/opt/jmx-exporter/kafka.yml ${KAFKA_OPTS:-}"
exec /opt/kafka/bin/kafka-server-start.sh "$props"

"""The local ports of the services started by `parcours up` (and an adapter run alone)."""

ADAPTER_PORTS = {"dac": 8101, "cpts": 8102, "crt": 8103}
SERVICE_PORTS = {**ADAPTER_PORTS, "processor": 8104, "validator": 8105, "supervisor": 8100}

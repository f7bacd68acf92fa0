"""The local ports of the services started by `parcours up` (and an adapter run alone)."""

ADAPTER_PORTS = {"dac": 8101, "cpts": 8102, "crt": 8103}
SERVICE_PORTS = {**ADAPTER_PORTS, "processor": 8104, "validator": 8105, "supervisor": 8100}
#: instance i of an adapter kind listens on its kind's port + i * this (8101, 8111, 8121 ... for the DAC)
INSTANCE_PORT_STEP = 10

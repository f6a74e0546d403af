"""The line in the plant: parts announced by the PLC (ZeroMQ, MQTT, OPC UA), their deadlines, and
the verdicts out over MQTT and OPC UA beside ZeroMQ. See the README section for the PLC integrator."""
